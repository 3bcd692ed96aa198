"""The /stream model sessions: shared per key, closed only when idle, busy instead of evicting."""

from __future__ import annotations

import threading
import time

import pytest

from edgescene.apps.stream_models import StreamModels, StreamModelsBusy


class Opened:
    def __init__(self) -> None:
        self.opened: list[str] = []
        self.closed: list[str] = []

    def opener(self, key: str):
        def open_it() -> str:
            self.opened.append(key)
            return f"session-{key}"

        return open_it


def test_a_key_is_shared_and_counted():
    o = Opened()
    pool = StreamModels(2, close=o.closed.append)
    with pool.lease("a", o.opener("a")) as first, pool.lease("a", o.opener("a")) as second:
        assert first == second == "session-a" and pool.users("a") == 2
    assert o.opened == ["a"] and pool.users("a") == 0 and pool.keys() == ["a"]  # idle, still open


def test_only_idle_sessions_are_closed_and_a_full_pool_of_busy_ones_says_busy():
    o = Opened()
    pool = StreamModels(2, close=o.closed.append, grace_s=0.05)
    with pool.lease("w8", o.opener("w8")):  # the victim of the reported attack: in use throughout
        with pool.lease("w3", o.opener("w3")):
            pass
        with pool.lease("w5", o.opener("w5")) as s5:  # takes the idle w3's place, not w8's
            assert s5 == "session-w5" and o.closed == ["session-w3"]
            assert pool.keys() == ["w8", "w5"]
            with (
                pytest.raises(StreamModelsBusy, match="all 2 model sessions .* in use"),
                pool.lease("w4", o.opener("w4")),
            ):
                pass
        assert o.closed == ["session-w3"] and pool.users("w8") == 1
    with pool.lease("w4", o.opener("w4")):  # now both are idle: the least recently leased goes
        assert o.closed == ["session-w3", "session-w8"]


def test_a_client_arriving_as_another_leaves_waits_for_its_slot_instead_of_busy():
    """The server releases a stream's lease after its client has gone: a client that connects in that
    moment gets the slot (the released session is closed in its place), not a 'busy'."""
    o = Opened()
    pool = StreamModels(1, close=o.closed.append, grace_s=10)
    leaving = threading.Event()

    def other_stream() -> None:
        with pool.lease("w3", o.opener("w3")):
            leaving.set()
            time.sleep(0.3)  # the server still closing the stream whose client has gone

    thread = threading.Thread(target=other_stream)
    thread.start()
    leaving.wait(10)
    start = time.monotonic()
    with pool.lease("w5", o.opener("w5")) as s:
        waited = time.monotonic() - start
        assert s == "session-w5" and o.closed == ["session-w3"]
    thread.join(10)
    assert 0.1 < waited < 5  # it waited for the release, not the whole grace
    with pool.lease("w5", o.opener("w5")), pytest.raises(ValueError, match="grace_s"):
        StreamModels(1, close=o.closed.append, grace_s=-1)


def test_busy_comes_after_the_grace_when_nothing_is_released():
    o = Opened()
    pool = StreamModels(1, close=o.closed.append, grace_s=0.2)
    with pool.lease("w8", o.opener("w8")):
        start = time.monotonic()
        with pytest.raises(StreamModelsBusy), pool.lease("w4", o.opener("w4")):
            pass
        assert time.monotonic() - start >= 0.2 and o.opened == ["w8"]


def test_a_failed_open_is_not_kept_and_is_tried_again():
    o = Opened()
    pool = StreamModels(1, close=o.closed.append)

    def broken() -> str:
        raise ValueError("no such model file")

    with pytest.raises(ValueError, match="no such model"), pool.lease("a", broken):
        pass
    assert len(pool) == 0 and pool.users("a") == 0
    with pool.lease("a", o.opener("a")) as s:
        assert s == "session-a"


def test_clients_of_a_key_being_opened_wait_for_it_and_other_keys_do_not():
    o = Opened()
    pool = StreamModels(2, close=o.closed.append)
    release = threading.Event()
    got: list[str] = []

    def slow() -> str:
        release.wait(10)
        return "session-slow"

    def client() -> None:
        with pool.lease("slow", slow) as s:
            got.append(s)

    threads = [threading.Thread(target=client) for _ in range(2)]
    for t in threads:
        t.start()
    with pool.lease("fast", o.opener("fast")) as s:  # not blocked by the slow open
        assert s == "session-fast" and not got
    release.set()
    for t in threads:
        t.join(10)
    assert got == ["session-slow", "session-slow"] and pool.users("slow") == 0


def test_close_all_and_capacity():
    o = Opened()
    pool = StreamModels(3, close=o.closed.append)
    for key in "abc":
        with pool.lease(key, o.opener(key)):
            pass
    pool.close_all()
    assert sorted(o.closed) == ["session-a", "session-b", "session-c"] and len(pool) == 0
    with pytest.raises(ValueError, match="capacity"):
        StreamModels(0, close=o.closed.append)
