"""How an export reports its progress on stderr: files and bytes done of the estimate, the rate
and the time left. On a terminal one line redrawn in place (a bar) at most 5 times a second;
otherwise (a log, a pipe) a plain line every ``PLAIN_EVERY`` seconds, and the last one when
done. The files to do are those planned so far (the selection is streamed, planned while files
are written: ``12/340+`` while more may come)."""

from __future__ import annotations

import time
from typing import TextIO

PLAIN_EVERY = 10.0  # seconds between plain progress lines
_BAR_EVERY = 0.2
_BAR_WIDTH = 24


def human_bytes(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    def __init__(
        self,
        stream: TextIO,
        files: int,
        estimated: int,
        bar: bool | None = None,
        planning: bool = False,
    ) -> None:
        self.stream = stream
        self.total = files
        self.estimated = estimated
        self.planning = planning  # more files may be planned
        self.bar = stream.isatty() if bar is None else bar
        self.files = 0  # written or linked now
        self.skipped = 0  # there already
        self.failed = 0
        self.bytes = 0  # written now (links add none)
        self.start = time.monotonic()
        self._last = 0.0

    def plan(self, files: int, estimated: int) -> None:
        """``files`` more to do, about ``estimated`` bytes."""
        self.total += files
        self.estimated += estimated

    def planned(self) -> None:
        """Every file to do is planned."""
        self.planning = False

    def add(self, files: int = 0, written: int = 0, skipped: int = 0, failed: int = 0) -> None:
        self.files += files
        self.bytes += written
        self.skipped += skipped
        self.failed += failed
        now = time.monotonic()
        if now - self._last >= (_BAR_EVERY if self.bar else PLAIN_EVERY):
            self._last = now
            self.show()

    def line(self) -> str:
        done = self.files + self.skipped + self.failed
        elapsed = max(time.monotonic() - self.start, 1e-6)
        rate = self.files / elapsed
        left = max(self.total - done, 0)
        eta = _duration(left / rate) if rate > 0 else "?"
        share = done / self.total if self.total else 1.0
        text = (
            f"{done}/{self.total}{'+' if self.planning else ''} files ({share:.0%}), "
            f"{human_bytes(self.bytes)} written, "
            f"{rate:.1f} files/s, {human_bytes(self.bytes / elapsed)}/s, ETA {eta}"
        )
        if self.skipped:
            text += f", {self.skipped} there already"
        if self.failed:
            text += f", {self.failed} failed"
        return text

    def show(self) -> None:
        if self.bar:
            done = self.files + self.skipped + self.failed
            filled = round(_BAR_WIDTH * done / self.total) if self.total else _BAR_WIDTH
            bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
            self.stream.write(f"\r[{bar}] {self.line()}\x1b[K")
        else:
            self.stream.write(f"export: {self.line()}\n")
        self.stream.flush()

    def finish(self) -> None:
        self.show()
        if self.bar:
            self.stream.write("\n")
            self.stream.flush()
