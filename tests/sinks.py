"""Test sinks that let a test await a fire instead of sleeping."""

import os
import select
import time
from typing import List


class FifoSink:
    """A named pipe shell actions write one line to; ``wait`` blocks until lines arrive.

    We hold a writer open ourselves so the reader never sees end-of-file between fires.
    """

    def __init__(self, path: str):
        self.path = path
        os.mkfifo(path)
        self._read_fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self._keep_fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        self._buffer = b""
        self.lines: List[str] = []

    def command(self, tag: str) -> str:
        """A shell command that records ``tag``, the fire timestamp and the wall time."""
        return 'echo "%s $FORSUN_TIMESTAMP $(date +%%s.%%N)" > %s' % (tag, self.path)

    def wait(self, count: int, timeout: float = 10) -> List[List[str]]:
        """Waits until ``count`` lines arrived in total; returns them split into fields."""
        deadline = time.monotonic() + timeout
        while len(self.lines) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("expected %d fires, saw %d: %s"
                                     % (count, len(self.lines), self.lines))
            ready, _, _ = select.select([self._read_fd], [], [], remaining)
            if ready:
                self._buffer += os.read(self._read_fd, 65536)
                *complete, self._buffer = self._buffer.split(b"\n")
                self.lines.extend(line.decode() for line in complete)
        return [line.split() for line in self.lines[:count]]

    def quiet_for(self, seconds: float) -> List[str]:
        """Lines that arrive within ``seconds``, for checking nothing more fires."""
        before = len(self.lines)
        try:
            self.wait(before + 1, seconds)
        except AssertionError:
            pass
        return self.lines[before:]

    def close(self) -> None:
        os.close(self._read_fd)
        os.close(self._keep_fd)
