"""Every command README.md shows is run here, from the repository root, as a reader would type it.

The convention for README.md's fenced blocks (also stated at the end of the README):

- A ```bash block is shell commands. It runs as one bash script (``set -euo pipefail``) with the
  repository root as the working directory, the folder of ``sys.executable`` (the venv's ``bin``, so
  ``edgescene`` is the one installed there) first on ``PATH``, and ``HF_HUB_OFFLINE=1``: nothing may
  download. It must exit 0, within ``TIMEOUT_S``.
- Lines that start with ``make `` are not run: CI runs ``make lint`` and then exactly ``make test``
  itself, which builds the environment this test runs in (running make from inside the suite would
  reinstall it or recurse). ``test_make_lines_name_makefile_targets`` checks that they name real
  targets.
- ``<!-- not run by tests: REASON -->`` on the line before a block: the block needs a GPU, the network
  or downloaded weights (the VGGT-1B checkpoint) and is not run. The reason is required.
- ``<!-- run by tests as a server: ... -->`` before a block: its one command starts a server with
  ``--port N``. The test starts it on a free port instead (every ``N`` in this block and the next is
  replaced), waits until ``GET /health`` answers 200, runs the next block, which must be marked
  ``<!-- run by tests against the server above -->``, waits for every job that block submitted to end
  ``done`` (its ``--jobs-dir`` under ``out/`` is emptied first, so the jobs listed are this run's), then
  stops the server with SIGTERM and requires a clean exit. curl reads a ``.curlrc``
  with ``fail-with-body``, so an HTTP error fails the block.
- ```text blocks are output or layouts. Any other fence (```python, ```sh, ...) fails the test: it
  would be an untested command.
- What a run block writes goes under ``out/`` (gitignored): every ``--out``, ``--out-dir``,
  ``--jobs-dir``, ``--target-dir`` and ``--workspace`` in a run block starts with ``out/``.

Besides the commands: the README stays a front door (at most ``MAX_README_LINES`` lines), the copy of
the export format table in docs/export.md is the generated one (tests/export checks it too), the
relative links of README.md, ARCHITECTURE.md and docs/*.md resolve, and none of them names an internal
work item ("issue 8"; upstream references such as facebookresearch/vggt#50 are fine).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from ports import free_port

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
GUIDES = sorted((REPO / "docs").glob("*.md"))
MAX_README_LINES = 250
TIMEOUT_S = 240

NOT_RUN = "not run by tests:"
SERVER = "run by tests as a server"
CLIENT = "run by tests against the server above"
OUTPUT_OPTIONS = re.compile(r"--(?:out|out-dir|jobs-dir|target-dir|workspace)[ =](\S+)")
# Linked from the docs map, written by another change (make check-aarch64's report); a skip, not a
# failure, until it lands.
PENDING = {"docs/aarch64.md"}


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    marker: str  # the HTML comment on the line before the fence, without <!-- -->; "" when none

    @property
    def id(self) -> str:
        return f"README.md:{self.line}"


def parse_blocks(markdown: str) -> list[Block]:
    blocks = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(\S*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        start = i
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        assert j < len(lines), f"README.md:{start + 1}: a fence that never closes"
        previous = lines[start - 1].strip() if start > 0 else ""
        comment = re.fullmatch(r"<!--\s*(.*?)\s*-->", previous)
        marker = comment.group(1) if comment else ""
        blocks.append(Block(start + 1, fence.group(1), "\n".join(lines[start + 1 : j]), marker))
        i = j + 1
    return blocks


BLOCKS = parse_blocks(README.read_text())
SHELL = [b for b in BLOCKS if b.lang == "bash"]


def script(block: Block) -> str:
    """The block as it runs: without the ``make`` lines (CI runs those)."""
    kept = []
    for line in block.text.splitlines():
        if line.startswith("make "):
            assert not line.rstrip().endswith("\\"), f"{block.id}: a make line continued onto the next"
            continue
        kept.append(line)
    return "\n".join(kept)


def has_commands(text: str) -> bool:
    return any(line.strip() and not line.lstrip().startswith("#") for line in text.splitlines())


def plain_blocks() -> list[Block]:
    return [b for b in SHELL if not b.marker and has_commands(script(b))]


def environment(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["HF_HUB_OFFLINE"] = "1"
    env["GRADIO_ANALYTICS_ENABLED"] = "False"
    env.pop("EDGESCENE_API_TOKEN", None)  # the tour's server runs without a token
    curl_home = tmp_path / "curl"
    curl_home.mkdir()
    (curl_home / ".curlrc").write_text("fail-with-body\nmax-time = 60\n")
    env["CURL_HOME"] = str(curl_home)
    return env


def run_script(block: Block, text: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + text],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, (
        f"{block.id}: exit {result.returncode}; mark the block '<!-- {NOT_RUN} why -->' if it cannot run "
        f"here\n--- script ---\n{text}\n--- output ---\n{output[-4000:]}"
    )
    return output


# -- the README's structure ---------------------------------------------------------------------------


def test_readme_is_a_front_door():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines; keep it under {MAX_README_LINES} and move the detail to docs/"
    )


def test_every_fence_is_run_or_says_why_not():
    for block in BLOCKS:
        assert block.lang in ("bash", "text"), (
            f"{block.id}: a ```{block.lang or '(none)'} block; commands go in ```bash blocks (run by this test "
            "or marked), output and layouts in ```text"
        )
        if block.lang != "bash" or not block.marker:
            continue
        if block.marker.startswith(NOT_RUN):
            assert block.marker[len(NOT_RUN) :].strip(), f"{block.id}: say why the block is not run"
        else:
            assert block.marker.startswith((SERVER, CLIENT)), f"{block.id}: unknown marker <!-- {block.marker} -->"


def test_run_blocks_write_under_out():
    for block in SHELL:
        if block.marker.startswith(NOT_RUN):
            continue
        for value in OUTPUT_OPTIONS.findall(script(block)):
            assert value.startswith("out/"), f"{block.id}: {value} is outside out/ (gitignored)"


def test_make_lines_name_makefile_targets():
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", makefile, flags=re.M))
    named = [
        (block.id, line.split()[1]) for block in SHELL for line in block.text.splitlines() if line.startswith("make ")
    ]
    assert named, "the README shows no make command"
    for where, target in named:
        assert target in targets, f"{where}: make {target} is not a Makefile target"


# -- the commands ---------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("block", plain_blocks(), ids=lambda b: b.id)
def test_readme_block_runs(block, tmp_path):
    run_script(block, script(block), environment(tmp_path))


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, json.loads(response.read())


def server_pairs() -> list[tuple[Block, Block]]:
    pairs = []
    for k, block in enumerate(SHELL):
        if block.marker.startswith(SERVER):
            client = SHELL[k + 1] if k + 1 < len(SHELL) else None
            assert client is not None and client.marker.startswith(CLIENT), (
                f"{block.id}: a server block must be followed by a block marked <!-- {CLIENT} -->"
            )
            pairs.append((block, client))
    return pairs


@pytest.mark.slow
@pytest.mark.service
@pytest.mark.parametrize("server,client", server_pairs(), ids=lambda b: b.id)
def test_readme_server_and_its_client_run(server, client, tmp_path):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed; the README's client block uses it")
    commands = [line for line in script(server).splitlines() if has_commands(line)]
    assert len(commands) == 1, f"{server.id}: a server block holds one command"
    port = re.search(r"--port[ =](\d+)", commands[0])
    assert port, f"{server.id}: the server command names its --port"
    jobs_dir = re.search(r"--jobs-dir[ =](\S+)", commands[0])
    if jobs_dir and jobs_dir.group(1).startswith("out/"):  # the jobs this run submits, and only those
        shutil.rmtree(REPO / jobs_dir.group(1), ignore_errors=True)
    free = str(free_port())
    swap = re.compile(rf"\b{port.group(1)}\b")
    env = environment(tmp_path)
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            ["bash", "-c", "exec " + swap.sub(free, commands[0])],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{free}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"{server.id}: the server exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            try:
                if _get_json(base + "/health")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, f"{server.id}: no answer on /health:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)

        run_script(client, swap.sub(free, script(client)), env)

        deadline = time.monotonic() + 120
        while True:  # every job the client submitted ends, and ends done
            _, jobs = _get_json(base + "/jobs")
            states = {job["id"]: job["status"] for job in jobs}
            if all(s in ("done", "failed", "cancelled", "interrupted") for s in states.values()):
                break
            assert time.monotonic() < deadline, f"{client.id}: jobs still running after 120 s: {states}"
            time.sleep(0.3)
        failed = [job for job in jobs if job["status"] != "done"]
        assert not failed, f"{client.id}: jobs that did not end done: {failed}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert proc.returncode in (0, -signal.SIGTERM), f"{server.id}: exit {proc.returncode}:\n{log.read_text()[-3000:]}"


# -- the docs around it ---------------------------------------------------------------------------------


def test_docs_export_format_table_is_the_generated_one():
    from edgescene.export.formats import markdown_table

    assert markdown_table() in (REPO / "docs" / "export.md").read_text()


def _documents() -> list[Path]:
    return [README, REPO / "ARCHITECTURE.md", *GUIDES]


def _anchors(markdown: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"```.*?```", "", markdown.read_text(), flags=re.S)
    headings = re.findall(r"^#+\s+(.+?)\s*$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_relative_links_resolve():
    missing, pending = [], []
    for doc in _documents():
        text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)  # links, not code
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            path = (doc.parent / file).resolve() if file else doc
            if path.exists():
                if anchor and path.suffix == ".md" and anchor not in _anchors(path):
                    missing.append(f"{doc.relative_to(REPO)} -> {target} (no such heading)")
                continue
            where = f"{doc.relative_to(REPO)} -> {target}"
            inside = path.is_relative_to(REPO.resolve())
            (pending if inside and path.relative_to(REPO.resolve()).as_posix() in PENDING else missing).append(where)
    assert not missing, "links that resolve to nothing:\n" + "\n".join(missing)
    if pending:
        pytest.skip("linked, not yet committed: " + ", ".join(pending))


def test_no_internal_work_items():
    for doc in _documents():
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            found = re.search(r"\b(?:issue|stop)s? \d+\b", line, flags=re.I)
            assert not found, f"{doc.relative_to(REPO)}:{n}: '{found.group(0)}' names an internal work item"
