"""TCP listeners: accept connections, cap their number, keep the live set for shutdown.

A listener is described by an ActiveMQ-style URI (``stomp://127.0.0.1:61613``); port 0 picks a
free port, readable from :attr:`Listener.port` once started.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from dovecote.transport.connection import Connection, ConnectionLimits, Session

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"stomp": 61613, "tcp": 61613}


@dataclass(frozen=True, slots=True)
class ListenAddress:
    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, uri: str) -> ListenAddress:
        """Parse ``stomp://host:port``; a bare ``host:port`` means STOMP."""
        if "://" not in uri:
            uri = f"stomp://{uri}"
        parts = urlsplit(uri)
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise ValueError(f"unsupported listener scheme {parts.scheme!r} in {uri!r}")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"invalid port in {uri!r}") from None
        host = parts.hostname or "127.0.0.1"
        return cls("stomp", host, DEFAULT_PORTS[scheme] if port is None else port)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


class Listener:
    """Accepts connections on one address and gives each a session from ``session_factory``."""

    def __init__(
        self,
        address: ListenAddress,
        session_factory: Callable[[Connection], Session],
        *,
        limits: ConnectionLimits | None = None,
        max_connections: int = 10_000,
    ) -> None:
        self.address = address
        self.max_connections = max_connections
        self.connections: set[Connection] = set()
        self.rejected = 0
        self._session_factory = session_factory
        self._limits = limits or ConnectionLimits()
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self.address.port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"{self.address.scheme}://{self.address.host}:{self.port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._make_connection,
            self.address.host,
            self.address.port,
            reuse_address=True,
            backlog=4096,
        )
        for sock in self._server.sockets:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        log.info("listening on %s", self.url)

    def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()

    async def close(self, reason: str = "broker shutting down", timeout: float = 5.0) -> None:
        """Stop accepting, close every connection, and wait (up to ``timeout``) for them."""
        self.stop_accepting()
        for connection in list(self.connections):
            connection.close(reason)
        deadline = asyncio.get_running_loop().time() + timeout
        while self.connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        for connection in list(self.connections):
            connection.abort(reason)
        if self._server is not None:
            await self._server.wait_closed()

    def _make_connection(self) -> Connection:
        connection = Connection(
            self._admit, self._limits, self.connections.discard, str(self.address)
        )
        self.connections.add(connection)
        return connection

    def _admit(self, connection: Connection) -> Session:
        if len(self.connections) > self.max_connections:
            self.rejected += 1
            connection.abort(f"connection limit {self.max_connections} reached")
            return _RejectedSession()
        return self._session_factory(connection)


class _RejectedSession:
    """Session of a connection refused at accept time: it ignores everything."""

    def data_received(self, data: bytes) -> None:
        return None

    def connection_lost(self) -> None:
        return None

    def pause_writing(self) -> None:
        return None

    def resume_writing(self) -> None:
        return None
