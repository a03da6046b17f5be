"""Idle connections: open thousands of logged-in STOMP connections fast, and measure a process.

``open_connections`` keeps up to ``parallel`` handshakes in flight on non-blocking sockets
under one selector: each socket connects, sends CONNECT (``heart-beat:0,0``, so an idle
connection costs the broker nothing but memory) and is done once its CONNECTED frame
arrives. ``read_status`` reads a process's resident memory and thread count from
``/proc/PID/status`` (Linux).

Invariants: every handshake has a deadline; on failure every socket opened so far is closed
before the error propagates; the caller owns (and closes) the sockets returned.
"""

from __future__ import annotations

import errno
import resource
import selectors
import socket
import time
from dataclasses import dataclass
from typing import cast

from .frames import BenchError, connect_frame, split_frames
from .session import Target


@dataclass(frozen=True, slots=True)
class ProcessStatus:
    """Resident set size and thread count of a process at one moment."""

    rss_kib: int
    threads: int


def read_status(pid: int) -> ProcessStatus:
    """VmRSS and Threads from ``/proc/PID/status``."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            lines = status.read().splitlines()
    except OSError as exc:
        raise BenchError(f"cannot read the status of process {pid}: {exc}") from None
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    try:
        rss = int(fields["VmRSS"].split()[0])  # "123456 kB"
        threads = int(fields["Threads"])
    except (KeyError, ValueError, IndexError):
        raise BenchError(f"/proc/{pid}/status has no VmRSS/Threads (a zombie?)") from None
    return ProcessStatus(rss, threads)


def settled_status(pid: int, max_wait: float, window: float = 2.0) -> tuple[ProcessStatus, bool]:
    """The process's status once its threads and RSS stopped changing for ``window`` seconds.

    Brokers keep pooled threads for a while after connections close (ActiveMQ: tens of
    seconds), so a measurement right after a previous run would count them. Returns the last
    status and False if it was still changing after ``max_wait`` seconds.
    """
    interval = 0.25
    samples = [read_status(pid)]
    deadline = time.monotonic() + max_wait
    needed = max(2, round(window / interval) + 1)
    while True:
        recent = samples[-needed:]
        if len(recent) == needed and is_steady(recent):
            return samples[-1], True
        if time.monotonic() >= deadline:
            return samples[-1], False
        time.sleep(interval)
        samples.append(read_status(pid))


def is_steady(samples: list[ProcessStatus]) -> bool:
    """Same thread count throughout and RSS within 0.5 % (or 256 KiB) of the first sample."""
    first = samples[0]
    slack = max(256, first.rss_kib // 200)
    return all(
        s.threads == first.threads and abs(s.rss_kib - first.rss_kib) <= slack for s in samples
    )


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        return target
    return soft


class _Handshake:
    """Per-socket state: CONNECT not yet sent, or the bytes read so far while awaiting CONNECTED."""

    __slots__ = ("received", "sent")

    def __init__(self) -> None:
        self.sent = False
        self.received = bytearray()


def open_connections(
    target: Target, count: int, parallel: int, timeout: float
) -> list[socket.socket]:
    """``count`` connections, each past CONNECTED, with at most ``parallel`` in progress."""
    frame = connect_frame(target.vhost, target.user, target.password)
    done: list[socket.socket] = []
    pending: dict[socket.socket, _Handshake] = {}
    started = 0
    selector = selectors.DefaultSelector()
    deadline = time.monotonic() + timeout
    try:
        while len(done) < count:
            while started < count and len(pending) < parallel:
                sock = _start_connect(target)
                pending[sock] = _Handshake()
                selector.register(sock, selectors.EVENT_WRITE)
                started += 1
                deadline = time.monotonic() + timeout  # progress: the clock restarts
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(
                    f"{len(pending)} handshakes made no progress in {timeout:.0f} s "
                    f"({len(done)} of {count} connections open)"
                )
            for key, _ in selector.select(min(left, 1.0)):
                sock = cast(socket.socket, key.fileobj)
                if _advance(sock, pending[sock], frame, selector):
                    selector.unregister(sock)
                    del pending[sock]
                    done.append(sock)
                    deadline = time.monotonic() + timeout
    except BaseException:
        close_all(done)
        close_all(list(pending))
        raise
    finally:
        selector.close()
    return done


def _start_connect(target: Target) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    code = sock.connect_ex((target.host, target.port))
    if code not in (0, errno.EINPROGRESS):
        sock.close()
        raise BenchError(f"cannot connect to {target.host}:{target.port}: {errno.errorcode[code]}")
    return sock


def _advance(
    sock: socket.socket, state: _Handshake, frame: bytes, selector: selectors.BaseSelector
) -> bool:
    """One step of a handshake; True once CONNECTED has arrived."""
    if not state.sent:
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise BenchError(f"connect failed: {errno.errorcode.get(code, code)}")
        sent = sock.send(frame)  # a few hundred bytes into an empty socket buffer
        if sent != len(frame):
            raise BenchError("CONNECT frame did not fit the socket buffer")
        state.sent = True
        selector.modify(sock, selectors.EVENT_READ)
        return False
    try:
        data = sock.recv(4096)
    except BlockingIOError:
        return False
    if not data:
        raise BenchError("the broker closed a connection during CONNECT")
    state.received += data
    spans, _ = split_frames(state.received)
    if not spans:
        return False
    start, _, body_end = spans[0]
    if not state.received.startswith(b"CONNECTED", start):
        text = bytes(state.received[start:body_end]).decode(errors="replace")
        raise BenchError(f"broker refused a connection: {text[:300]!r}")
    return True


def close_all(socks: list[socket.socket]) -> None:
    """Close every socket (the broker sees EOF; idle connections need no DISCONNECT)."""
    for sock in socks:
        sock.close()
