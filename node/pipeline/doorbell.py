"""A wake-up call between the node's threads and its worker processes.

The assembler rings the workers' bell when it queues a job; a worker rings the exporter's bell
when it has queued exports. Without it each waits for its next poll of SQLite (0.2-0.5 s each,
most of a warm study's latency). SQLite stays the source of truth: a lost or stale ring only
costs the listener one poll interval or one empty look.
"""

from __future__ import annotations

import select
import socket

__all__ = ["Doorbell"]


class Doorbell:
    """A datagram socket pair shared with spawned workers (they inherit both ends when pickled).

    No lock anywhere (like :class:`node.pipeline.pool.StopFlag`): a process killed while
    ringing or waiting leaves nothing held. Each ring is one datagram; each wake consumes one,
    so with several workers one job wakes one worker.
    """

    def __init__(self) -> None:
        self._listen, self._ring = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._ring.setblocking(False)

    def ring(self) -> None:
        """Wake one waiting listener; never blocks."""
        try:
            self._ring.send(b"\x01")
        except OSError:  # buffer full (nobody has listened for a while) or closed: polls still find the work
            pass

    def wait(self, timeout_seconds: float) -> bool:
        """Return True at the first ring (consuming it), False after ``timeout_seconds`` (s) without one."""
        try:
            poller = select.poll()  # not select(): no FD_SETSIZE limit in a node with many sockets open
            poller.register(self._listen, select.POLLIN)
            ready = poller.poll(max(timeout_seconds, 0.0) * 1000.0)
            if ready:
                self._listen.recv(1, socket.MSG_DONTWAIT)  # another listener may have taken it: still a wake
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:  # closed at shutdown
            return False
        return bool(ready)

    def close(self) -> None:
        for end in (self._listen, self._ring):
            end.close()
