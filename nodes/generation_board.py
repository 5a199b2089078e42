"""Write generations shared by the worker processes of one node, in a memory-mapped file.

Why this exists: a write on one worker must be visible to the next read on every worker of the
node.  Readers note a key's generation before reading the store, and cached entries are served
only while that generation is still current; a writer bumps the generation after committing and
before acknowledging.  With the generations in a memory-mapped file shared by all the workers on
the host, invalidation is synchronous and costs one shared-memory read per cache hit, with no
messages between workers and no round trip to Redis.

The file holds a fixed number of native-endian unsigned 64-bit slots.  A key's slot is a stable
hash of its UTF-8 bytes (CRC-32, not Python's per-process randomised ``hash``), so every process
agrees on it; two keys sharing a slot only cost each other a cache miss.  Reads take no lock:
slots are aligned 8-byte words, which the hardware loads and stores whole.  Writes read,
increment and write back under an exclusive ``flock`` on the file, so concurrent bumps from
different processes are never lost.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import socket
import threading
import time
import zlib
from array import array
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

_SLOT = 8


class GenerationBoard:
    """:class:`resolver.ports.Generations` in the file at ``path``, shared between processes.

    The file is created if missing; an existing file must have ``slots`` slots.
    Open one board per process, after forking: ``flock`` locks belong to the open file, so a
    board inherited across ``fork`` would share its lock with the parent's.
    """

    def __init__(self, path: str | os.PathLike[str], slots: int = 1 << 16) -> None:
        if slots < 1:
            raise ValueError(f"a generation board needs at least one slot, not {slots}")
        size = slots * _SLOT
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            # Sized and seeded under the lock, so processes starting together agree on the file.
            with _flocked(self._fd):
                found = os.fstat(self._fd).st_size
                if found not in (0, size):
                    raise ValueError(
                        f"generation board {os.fsdecode(path)} holds {found // _SLOT} slots,"
                        f" not {slots}"
                    )
                if found == 0:
                    os.ftruncate(self._fd, size)
                self._map = mmap.mmap(self._fd, size)
                self._view = memoryview(self._map).cast("Q")
                if found == 0:
                    # Start from the clock, not zero: a board recreated after a loss then never
                    # repeats generations that answers still cached in Redis may carry.
                    self._view[:] = array("Q", [time.time_ns()]) * slots
        except BaseException:
            os.close(self._fd)
            raise
        self._slots = slots
        # flock does not exclude threads sharing this descriptor; this lock does.
        self._thread_lock = threading.Lock()
        where = os.fstat(self._fd)
        place = f"{socket.gethostname()}:{where.st_dev}:{where.st_ino}".encode()
        self.identity = int.from_bytes(hashlib.blake2b(place, digest_size=8).digest()) >> 1
        """This board's file on this host, as a 63-bit number: the same for every process
        sharing the board, so the change log can tell which writes a host has invalidated."""

    def current(self, key: str) -> int:
        return self._view[zlib.crc32(key.encode("utf-8", "surrogatepass")) % self._slots]

    def bump(self, keys: Iterable[str]) -> None:
        slots = {zlib.crc32(key.encode("utf-8", "surrogatepass")) % self._slots for key in keys}
        if not slots:
            return
        with self._locked():
            for slot in slots:
                self._view[slot] += 1

    def bump_all(self) -> None:
        with self._locked():
            self._view[:] = array("Q", [n + 1 for n in self._view])

    def close(self) -> None:
        self._view.release()
        self._map.close()
        os.close(self._fd)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock, _flocked(self._fd):
            yield


@contextmanager
def _flocked(fd: int) -> Iterator[None]:
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
