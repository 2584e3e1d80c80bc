"""The connection board: how many client connections each worker of a supervisor holds, so that
a new connection goes to a worker holding the fewest.

The workers accept from one shared listening socket. A connection wakes every worker waiting
on it, and which one takes it is up to the scheduler: whichever runs first, which on a busy
machine is often the same one, connection after connection (taking one connection per wake-up
alone, eight keep-alive connections opened together still all went to one of two workers in 8
or 9 of 20 tries on a busy 2-CPU machine). So each worker posts its count of open connections
in its seat on the board, a small file of the supervisor's run directory that every worker maps
into memory. When a connection wakes a worker while another holds fewer, it leaves the connection to
that one, looking again every :data:`RECHECK` seconds (a timer of whole milliseconds, which
uvloop's are: never a busy loop); if a connection still waits after :data:`DEFER` seconds (the
other is busy, or stuck), it takes it and every other one waiting, up to a bound, and defers to
that worker no more until its count moves (a worker whose loop is stuck posts nothing): a stuck
worker costs one wait of :data:`DEFER`, not one per connection. Equal counts race as before.

The supervisor makes the board, gives each worker a free seat (a worker being replaced and its
replacement sit at once, so seats are not slots) and frees it when the worker is gone; a
draining worker leaves its seat itself. Counts are read and written without a lock: a count a
moment old only makes the spread a little less even.
"""

from __future__ import annotations

import mmap
from pathlib import Path

# seats: workers past them (with ``processes: 0`` on a machine of more than 256 CPUs, or 256
# processes during a reload, which starts one more worker per slot) accept unseated, by racing
SEATS = 512
FREE = 2**62  # the count in a seat nobody accepting sits in: never the fewest
# seconds a worker leaves a waiting connection to one holding fewer, at most: long enough for a
# busy machine's scheduler to run the other (5 ms let 3 of 30 tries of 8 connections go 7:1 or
# 8:0 at load 2.5 on 2 CPUs, 20 ms 1 of 30), short beside a client's patience
DEFER = 0.02
RECHECK = 0.001  # seconds between its looks meanwhile: uvloop's timers count whole milliseconds
_WIDTH = 8  # bytes of a count


def create(path: Path) -> None:
    """A board of :data:`SEATS` free seats at ``path``."""
    path.write_bytes(FREE.to_bytes(_WIDTH, "little", signed=True) * SEATS)


class Board:
    """The board at ``path``, mapped into this process."""

    def __init__(self, path: Path) -> None:
        with open(path, "r+b") as file:
            self._map = mmap.mmap(file.fileno(), SEATS * _WIDTH)
        self._counts = memoryview(self._map).cast("q")

    def post(self, seat: int, count: int) -> None:
        self._counts[seat] = count

    def free(self, seat: int) -> None:
        self._counts[seat] = FREE

    def fewer_elsewhere(self, seat: int, count: int, unheeded: dict[int, int]) -> dict[int, int]:
        """The other seats whose worker holds fewer than ``count`` connections, with their
        counts: those of ``unheeded`` (seat -> count) only once their count is another."""
        counts = self._counts.tolist()
        fewer: dict[int, int] = {}
        if min(counts) >= count:  # (its own seat holds ``count``) the usual case, at C speed
            return fewer
        for other, held in enumerate(counts):
            if held < count and other != seat and unheeded.get(other) != held:
                fewer[other] = held
        return fewer

    def unchanged(self, seats: dict[int, int]) -> dict[int, int]:
        """Those of ``seats`` (seat -> count) whose count is still the one given."""
        counts = self._counts
        return {seat: held for seat, held in seats.items() if counts[seat] == held}

    def close(self) -> None:
        self._counts.release()
        self._map.close()


class Seat:
    """One worker's seat on the board."""

    def __init__(self, board: Board, seat: int) -> None:
        self.board = board
        self.seat = seat

    def post(self, count: int) -> None:
        self.board.post(self.seat, count)

    def leave(self) -> None:
        self.board.free(self.seat)

    def fewer_elsewhere(self, count: int, unheeded: dict[int, int]) -> dict[int, int]:
        return self.board.fewer_elsewhere(self.seat, count, unheeded)
