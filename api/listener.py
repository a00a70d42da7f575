"""The listening socket that uvicorn's worker processes share, and how each takes connections."""

from __future__ import annotations

import asyncio
import fcntl
import mmap
import os
import socket
import tempfile
import time
from multiprocessing.reduction import DupFd
from typing import Any

# Workers that can hold a slot in the table of open connections (uvicorn allows 64 with `serve`).
SLOTS = 64
# How long a worker holding more connections than another leaves a pending one to it.
YIELD_SECONDS = 0.005


class _ConnectionTable:
    """Each worker's pid and number of open connections, in a file every worker maps.

    Only a worker writes its own count; a slot whose worker died is taken by the next worker
    that starts (uvicorn restarts the dead one), which resets it.
    """

    def __init__(self, descriptor: int) -> None:
        self._descriptor = descriptor
        self._map = mmap.mmap(descriptor, SLOTS * 16)
        self._cells = memoryview(self._map).cast("q")
        self._slot = -1

    @classmethod
    def create(cls) -> _ConnectionTable:
        with tempfile.TemporaryFile() as file:
            descriptor = os.dup(file.fileno())
        os.ftruncate(descriptor, SLOTS * 16)
        return cls(descriptor)

    @property
    def descriptor(self) -> int:
        return self._descriptor

    def claim(self) -> None:
        """Take a free slot (or a dead worker's) for this process."""
        fcntl.flock(self._descriptor, fcntl.LOCK_EX)
        try:
            for slot in range(SLOTS):
                pid = self._cells[2 * slot]
                if pid == 0 or not _alive(pid):
                    self._cells[2 * slot] = os.getpid()
                    self._cells[2 * slot + 1] = 0
                    self._slot = slot
                    return
        finally:
            fcntl.flock(self._descriptor, fcntl.LOCK_UN)

    def fewest_elsewhere(self) -> bool:
        """Whether another worker holds fewer connections than this one."""
        if self._slot < 0:
            return False
        mine = self._cells[2 * self._slot + 1]
        for slot in range(SLOTS):
            if slot != self._slot and self._cells[2 * slot] and self._cells[2 * slot + 1] < mine:
                return True
        return False

    def add(self, delta: int) -> None:
        if self._slot >= 0:
            self._cells[2 * self._slot + 1] += delta


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _CountedConnection(socket.socket):
    """An accepted connection that leaves the table when it is closed."""

    _table: _ConnectionTable | None = None

    def close(self) -> None:
        table, self._table = self._table, None
        if table is not None:
            table.add(-1)
        super().close()


class SharedListener(socket.socket):
    """A TCP listener (proto IPPROTO_TCP, so accepted sockets keep TCP_NODELAY) shared by
    uvicorn's workers, each taking at most one connection per turn of its event loop, and
    leaving a pending connection for a moment to a worker that holds fewer.

    asyncio accepts every pending connection at once, and every worker is woken by the same new
    connection: the first to run took them all, so a client opening a few keep-alive connections
    at once (a proxy's pool, wrk) often had all of them served by one process while the others
    idled. A worker that holds fewer connections takes the next one; if none does within
    YIELD_SECONDS (all busy, or a worker gone) any worker takes it, so nothing waits longer.
    """

    _table: _ConnectionTable | None = None
    _turn_taken = False
    _yielding_since = -YIELD_SECONDS
    _refused_at = -YIELD_SECONDS

    def accept(self) -> tuple[socket.socket, Any]:
        table = self._table
        if self._turn_taken:
            # asyncio stops accepting on this; the listener stays readable, so the next turn
            # of the loop (or another worker) takes what is pending.
            raise BlockingIOError
        if table is not None and table.fewest_elsewhere():
            now = time.monotonic()
            # Asked again on every turn while a connection is pending: a pause means another
            # worker took it, and this is a new one.
            if now - self._refused_at > YIELD_SECONDS:
                self._yielding_since = now
            self._refused_at = now
            if now - self._yielding_since < YIELD_SECONDS:
                raise BlockingIOError
        accepted, address = super().accept()
        connection = _CountedConnection(
            accepted.family, accepted.type, accepted.proto, fileno=accepted.detach()
        )
        if table is not None:
            connection._table = table
            table.add(1)
        self._turn_taken = True
        asyncio.get_running_loop().call_soon(self._next_turn)
        return connection, address

    def _next_turn(self) -> None:
        self._turn_taken = False

    def __reduce__(self) -> tuple[Any, ...]:
        # Passed to uvicorn's spawned workers: the descriptors travel, the class with them.
        table = self._table
        return _rebuild, (
            DupFd(self.fileno()),
            self.family,
            self.type,
            self.proto,
            None if table is None else DupFd(table.descriptor),
        )


def _rebuild(
    descriptor: Any, family: int, kind: int, proto: int, table_descriptor: Any
) -> SharedListener:
    listener = SharedListener(family, kind, proto, fileno=descriptor.detach())
    listener.setblocking(False)
    if table_descriptor is not None:
        listener._table = _ConnectionTable(table_descriptor.detach())
        listener._table.claim()
    return listener


def shared_listener(bound: socket.socket) -> SharedListener:
    """The socket uvicorn bound, as a SharedListener; `bound` is consumed."""
    listener = SharedListener(bound.family, bound.type, socket.IPPROTO_TCP, fileno=bound.detach())
    listener.set_inheritable(True)
    listener._table = _ConnectionTable.create()
    return listener
