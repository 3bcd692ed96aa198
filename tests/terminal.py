"""What a terminal shows of a program's output: carriage returns overwrite the line (a progress bar)."""

from __future__ import annotations


def terminal_lines(text: str) -> list[str]:
    """The non-blank lines a terminal ends up showing for ``text`` (``\\r`` returns to the line's start)."""
    shown = []
    for line in text.split("\n"):
        screen: list[str] = []
        for part in line.split("\r"):
            screen[: len(part)] = part
        visible = "".join(screen).rstrip()
        if visible:
            shown.append(visible)
    return shown
