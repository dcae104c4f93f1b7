"""athens-admin's progress: a bar on a terminal (a real pseudo-terminal here), plain lines in CI logs."""

from __future__ import annotations

import io
import os
import pty
import select

from athens.progress import ProgressBar


def test_plain_lines_every_tenth_when_not_on_a_terminal():
    out = io.StringIO()
    bar = ProgressBar(out)
    for done in range(0, 21):
        bar.step(done, 20, f"stored {done}", f"example.com/m{done}@v1.0.0")
    bar.note("failed example.com/x@v1.0.0: not found")
    lines = out.getvalue().splitlines()
    assert lines[0] == "  0% 0/20 stored 0" and lines[-2] == "100% 20/20 stored 20"
    assert len(lines) == 12 and lines[-1] == "failed example.com/x@v1.0.0: not found"
    assert "\r" not in out.getvalue()


def read_all(fd: int) -> str:
    chunks = []
    while select.select([fd], [], [], 0.5)[0]:
        try:
            data = os.read(fd, 65536)
        except OSError:  # the other side is closed
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


def test_a_bar_with_rate_and_time_on_a_terminal():
    master, slave = pty.openpty()
    with os.fdopen(slave, "w") as terminal:
        bar = ProgressBar(terminal)
        for done in range(1, 11):
            if done == 5:
                bar.note("failed example.com/x@v1.0.0: not found")
            bar.step(done, 10, f"stored {done}", "example.com/m@v1.0.0")
        terminal.flush()
        shown = read_all(master)
    os.close(master)
    assert "\r" in shown  # redrawn in place
    assert "100%|" in shown and "10/10" in shown and " version/s" in shown  # tqdm's bar, with the rate
    assert "stored 10 example.com/m@v1.0.0" in shown
    assert "failed example.com/x@v1.0.0: not found" in shown
