"""
Progress of a long admin command: tqdm's bar on a terminal (rate, time left,
the terminal's width), and elsewhere (CI logs, pipes, files) a plain line
every 10%, since carriage returns make a log unreadable.
"""

from __future__ import annotations

import os
from typing import IO, Any

from tqdm import tqdm


class ProgressBar:
    def __init__(self, stream: IO[str], unit: str = "version") -> None:
        self.stream = stream
        self.unit = unit
        self.tty = stream.isatty()
        self.last_decile = -1
        self._bar: tqdm[Any] | None = None

    def __call__(self, done: int, total: int, report: Any, current: str) -> None:
        """The importer's callback."""
        self.step(done, total, f"imported {len(report.imported)} refused {len(report.refused)}", current)

    def step(self, done: int, total: int, summary: str, current: str) -> None:
        if self.tty:
            self._draw(done, total, summary, current)
            return
        fraction = done / total if total else 1.0
        if int(fraction * 10) > self.last_decile:
            self.last_decile = int(fraction * 10)
            self.stream.write(f"{int(fraction * 100):3d}% {done}/{total} {summary}\n")
            self.stream.flush()

    def _draw(self, done: int, total: int, summary: str, current: str) -> None:
        if self._bar is None:
            # A terminal that says it has no columns (a bare pseudo-terminal) gets 100 rather than no bar at all.
            width = {"dynamic_ncols": True} if _columns(self.stream) else {"ncols": 100}
            self._bar = tqdm(total=total, file=self.stream, unit=f" {self.unit}", leave=True, **width)
        self._bar.total = total
        self._bar.set_postfix_str(f"{summary} {current[:50]}".strip(), refresh=False)
        self._bar.update(done - self._bar.n)
        if done >= total:
            self.close()

    def note(self, line: str) -> None:
        """A line of its own (a failure, say), above the bar on a terminal."""
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _columns(stream: IO[str]) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 0
