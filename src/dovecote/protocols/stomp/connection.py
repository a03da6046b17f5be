"""The STOMP connection state machine, for both roles, as data.

``StompConnection`` wraps a :class:`FrameDecoder`: frames the peer sends are checked against
the transition table for the current state and the required headers for the negotiated
version; frames we send go through :meth:`StompConnection.send`, which checks them the same
way. After an error (ours or the peer's) the connection is in ``ERROR`` and refuses input.

Version negotiation and heart-beats follow STOMP 1.2 "Protocol Negotiation" and
"Heart-beating": the highest common version wins (no ``accept-version`` means 1.0), and each
direction's interval is the larger of what one side offers and the other wants, or 0 (off) if
either says 0. Timers are not kept here: :meth:`send_deadline` and :meth:`receive_deadline`
turn the caller's clock readings into deadlines.
"""

from __future__ import annotations

from enum import Enum

from dovecote.protocols._errors import LocalProtocolError, RemoteProtocolError
from dovecote.protocols.stomp.codec import FrameDecoder, FrameLimits, NeedData
from dovecote.protocols.stomp.frames import Command, Frame, encode_frame

SUPPORTED_VERSIONS: tuple[str, ...] = ("1.0", "1.1", "1.2")

# A peer may be this many times its heart-beat interval late before it is declared dead
# (STOMP 1.2 "Heart-beating" leaves the tolerance to the implementation).
RECEIVE_GRACE = 2.0


class Role(Enum):
    SERVER = "server"
    CLIENT = "client"


class State(Enum):
    IDLE = "idle"  # no CONNECT seen (server) or sent (client) yet
    CONNECTING = "connecting"  # CONNECT seen or sent, CONNECTED not yet
    OPEN = "open"
    CLOSED = "closed"  # after DISCONNECT: only its RECEIPT (and in-flight frames) remain
    ERROR = "error"


class UnsupportedVersion(RemoteProtocolError):
    """The client accepts no version we speak (STOMP 1.2 "Protocol Negotiation")."""

    def __init__(self, offered: str) -> None:
        super().__init__(
            f"supported protocol versions are {','.join(SUPPORTED_VERSIONS)}; "
            f"client accepts {offered[:60]}",
            code="version",
        )


_C = Command
# (role, state, command received) -> next state
_RECEIVE: dict[tuple[Role, State, Command], State] = {
    (Role.SERVER, State.IDLE, _C.CONNECT): State.CONNECTING,
    (Role.SERVER, State.IDLE, _C.STOMP): State.CONNECTING,
    **{
        (Role.SERVER, State.OPEN, c): State.OPEN
        for c in (_C.SEND, _C.SUBSCRIBE, _C.UNSUBSCRIBE, _C.ACK, _C.NACK, _C.BEGIN, _C.COMMIT)
    },
    (Role.SERVER, State.OPEN, _C.ABORT): State.OPEN,
    (Role.SERVER, State.OPEN, _C.DISCONNECT): State.CLOSED,
    (Role.CLIENT, State.CONNECTING, _C.CONNECTED): State.OPEN,
    (Role.CLIENT, State.CONNECTING, _C.ERROR): State.ERROR,
    (Role.CLIENT, State.OPEN, _C.MESSAGE): State.OPEN,
    (Role.CLIENT, State.OPEN, _C.RECEIPT): State.OPEN,
    (Role.CLIENT, State.OPEN, _C.ERROR): State.ERROR,
    (Role.CLIENT, State.CLOSED, _C.MESSAGE): State.CLOSED,
    (Role.CLIENT, State.CLOSED, _C.RECEIPT): State.CLOSED,
    (Role.CLIENT, State.CLOSED, _C.ERROR): State.ERROR,
}
# (role, state, command sent) -> next state
_SEND: dict[tuple[Role, State, Command], State] = {
    (Role.SERVER, State.CONNECTING, _C.CONNECTED): State.OPEN,
    (Role.SERVER, State.OPEN, _C.MESSAGE): State.OPEN,
    (Role.SERVER, State.OPEN, _C.RECEIPT): State.OPEN,
    (Role.SERVER, State.CLOSED, _C.RECEIPT): State.CLOSED,
    **{(Role.SERVER, s, _C.ERROR): State.ERROR for s in State if s is not State.ERROR},
    (Role.CLIENT, State.IDLE, _C.CONNECT): State.CONNECTING,
    (Role.CLIENT, State.IDLE, _C.STOMP): State.CONNECTING,
    **{
        (Role.CLIENT, State.OPEN, c): State.OPEN
        for c in (_C.SEND, _C.SUBSCRIBE, _C.UNSUBSCRIBE, _C.ACK, _C.NACK, _C.BEGIN, _C.COMMIT)
    },
    (Role.CLIENT, State.OPEN, _C.ABORT): State.OPEN,
    (Role.CLIENT, State.OPEN, _C.DISCONNECT): State.CLOSED,
}

# The same table grouped by (role, state), so a received frame costs one dict lookup.
_RECEIVE_BY_STATE: dict[tuple[Role, State], dict[Command, State]] = {
    (role, state): {c: nxt for (r, s, c), nxt in _RECEIVE.items() if r is role and s is state}
    for role in Role
    for state in State
}

# Headers a received frame must carry, per version; each entry is a set of alternatives.
_Req = tuple[tuple[str, ...], ...]
_TX: _Req = (("transaction",),)
_REQUIRED_12: dict[Command, _Req] = {
    _C.SEND: (("destination",),),
    _C.SUBSCRIBE: (("destination",), ("id",)),
    _C.UNSUBSCRIBE: (("id",),),
    # ActiveMQ also takes the 1.1 form of ACK in 1.2; so do we.
    _C.ACK: (("id", "message-id"),),
    _C.NACK: (("id", "message-id"),),
    _C.BEGIN: _TX,
    _C.COMMIT: _TX,
    _C.ABORT: _TX,
    _C.MESSAGE: (("destination",), ("message-id",), ("subscription",)),
    _C.RECEIPT: (("receipt-id",),),
}
_REQUIRED_10: dict[Command, _Req] = {
    **_REQUIRED_12,
    _C.SUBSCRIBE: (("destination",),),
    _C.UNSUBSCRIBE: (("id", "destination"),),
    _C.ACK: (("message-id", "id"),),
    _C.MESSAGE: (("destination",), ("message-id",)),
}
_REQUIRED = {"1.0": _REQUIRED_10, "1.1": _REQUIRED_12, "1.2": _REQUIRED_12}


def negotiate_version(accept_version: str | None) -> str:
    """The highest version both sides speak; no header means 1.0."""
    if accept_version is None:
        return "1.0"
    offered = {v.strip() for v in accept_version.split(",")}
    for version in reversed(SUPPORTED_VERSIONS):
        if version in offered:
            return version
    raise UnsupportedVersion(accept_version)


def parse_heart_beat(value: str | None) -> tuple[int, int]:
    """Parse ``heart-beat:cx,cy`` (milliseconds); absent means ``0,0``."""
    if value is None:
        return (0, 0)
    first, comma, second = value.partition(",")
    # isascii: str.isdigit() accepts digits int() refuses (superscripts, circled digits).
    if (
        not comma
        or not value.isascii()
        or not first.strip().isdigit()
        or not second.strip().isdigit()
        or len(value) > 24
    ):
        raise RemoteProtocolError(
            "heart-beat header must be two non-negative integers", code="malformed"
        )
    return (int(first), int(second))


def _interval(offer: int, want: int) -> int:
    return 0 if offer == 0 or want == 0 else max(offer, want)


class StompConnection:
    """One STOMP connection's protocol state, in the server or the client role."""

    __slots__ = (
        "_connect_heart_beat",
        "_decoder",
        "_receivable",
        "_state",
        "receive_heartbeat_ms",
        "role",
        "send_heartbeat_ms",
        "version",
    )

    def __init__(self, role: Role, limits: FrameLimits | None = None) -> None:
        self.role = role
        self.state = State.IDLE
        self.version = "1.0"
        self.send_heartbeat_ms = 0
        self.receive_heartbeat_ms = 0
        self._connect_heart_beat = (0, 0)
        self._decoder = FrameDecoder(limits)

    def __repr__(self) -> str:
        return f"<StompConnection {self.role.value} {self.state.value} v{self.version}>"

    @property
    def state(self) -> State:
        return self._state

    @state.setter
    def state(self, state: State) -> None:
        self._state = state
        self._receivable = _RECEIVE_BY_STATE[(self.role, state)]

    @property
    def buffered(self) -> int:
        return self._decoder.buffered

    def receive_data(self, data: bytes) -> None:
        if self.state is State.ERROR:
            raise RemoteProtocolError("connection is in an error state", code="broken")
        self._decoder.receive_data(data)

    def next_event(self) -> Frame | NeedData:
        """The next frame the peer sent, checked; NEED_DATA when none is complete."""
        try:
            frame = self._decoder.next_event()
            if isinstance(frame, NeedData):
                return frame
            state = self._receivable.get(frame.command)
            if state is None:
                raise RemoteProtocolError(self._unexpected(frame.command), code="unexpected-frame")
            self._check_required(frame)
            if state is not self.state:
                self._on_receive_transition(frame, state)
            return frame
        except RemoteProtocolError:
            self.state = State.ERROR
            raise

    def send(self, frame: Frame) -> bytes:
        """Encode a frame to send, advancing the state; raises LocalProtocolError if illegal."""
        state = _SEND.get((self.role, self.state, frame.command))
        if state is None:
            raise LocalProtocolError(f"cannot send {frame.command} in state {self.state.value}")
        if frame.command is Command.CONNECTED:
            self.version = frame.headers.get("version", "1.0")
            self._decoder.version = self.version
            ours = parse_heart_beat(frame.headers.get("heart-beat"))
            self._set_heart_beats(ours, self._connect_heart_beat)
        elif frame.command in (Command.CONNECT, Command.STOMP):
            self._connect_heart_beat = parse_heart_beat(frame.headers.get("heart-beat"))
        data = encode_frame(frame, self.version)
        self.state = state
        return data

    def send_deadline(self, last_sent: float) -> float | None:
        """When we must next send something (a heart-beat EOL if nothing else), or None."""
        if self.send_heartbeat_ms == 0 or self.state is not State.OPEN:
            return None
        return last_sent + self.send_heartbeat_ms / 1000

    def receive_deadline(self, last_received: float) -> float | None:
        """When the peer counts as dead if it has sent nothing since ``last_received``."""
        if self.receive_heartbeat_ms == 0 or self.state is not State.OPEN:
            return None
        return last_received + RECEIVE_GRACE * self.receive_heartbeat_ms / 1000

    # --- internals ----------------------------------------------------------------------------

    def _unexpected(self, command: Command) -> str:
        if self.state is State.IDLE:
            return f"expected a CONNECT frame, got {command}"
        if self.state is State.CLOSED:
            return f"received {command} after DISCONNECT"
        return f"cannot receive {command} in state {self.state.value}"

    def _check_required(self, frame: Frame) -> None:
        required = _REQUIRED[self.version].get(frame.command)
        if required is None:
            return
        headers = frame.headers
        for alternatives in required:
            for name in alternatives:
                if name in headers:
                    break
            else:
                raise RemoteProtocolError(
                    f"{frame.command} frame is missing the {alternatives[0]!r} header",
                    code="missing-header",
                )
        if frame.command is Command.NACK and self.version == "1.0":
            raise RemoteProtocolError("NACK does not exist in STOMP 1.0", code="unexpected-frame")

    def _on_receive_transition(self, frame: Frame, state: State) -> None:
        headers = frame.headers
        if frame.command in (Command.CONNECT, Command.STOMP):
            # Negotiate now so that an unsupported version is the peer's error.
            negotiate_version(headers.get("accept-version"))
            self._connect_heart_beat = parse_heart_beat(headers.get("heart-beat"))
        elif frame.command is Command.CONNECTED:
            self.version = headers.get("version", "1.0")
            if self.version not in SUPPORTED_VERSIONS:
                raise UnsupportedVersion(self.version)
            self._decoder.version = self.version
            theirs = parse_heart_beat(headers.get("heart-beat"))
            self._set_heart_beats(self._connect_heart_beat, theirs)
        self.state = state

    def _set_heart_beats(self, ours: tuple[int, int], theirs: tuple[int, int]) -> None:
        # heart-beat: <can send every cx>,<want to receive every cy>
        self.send_heartbeat_ms = _interval(ours[0], theirs[1])
        self.receive_heartbeat_ms = _interval(theirs[0], ours[1])
