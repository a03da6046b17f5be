"""The STOMP connection state machine in both roles, driven by bytes and frames only."""

from __future__ import annotations

import pytest

from dovecote.protocols._errors import LocalProtocolError, RemoteProtocolError
from dovecote.protocols.stomp import (
    NEED_DATA,
    Command,
    Frame,
    Role,
    State,
    StompConnection,
    UnsupportedVersion,
    encode_frame,
)
from dovecote.protocols.stomp.connection import (
    RECEIVE_GRACE,
    negotiate_version,
    parse_heart_beat,
)

C = Command
CONNECT_ALL = Frame(C.CONNECT, {"accept-version": "1.0,1.1,1.2", "host": "h"})


def receive(conn: StompConnection, frame: Frame, version: str = "1.2") -> Frame:
    """Feed one encoded frame; return what the connection yields."""
    conn.receive_data(encode_frame(frame, version))
    event = conn.next_event()
    assert isinstance(event, Frame)
    return event


def server_in(state: State, version: str = "1.2") -> StompConnection:
    """A server connection brought to ``state`` through its public API."""
    conn = StompConnection(Role.SERVER)
    if state is State.IDLE:
        return conn
    receive(conn, CONNECT_ALL)
    if state is State.CONNECTING:
        return conn
    conn.send(Frame(C.CONNECTED, {"version": version}))
    if state is State.OPEN:
        return conn
    assert state is State.CLOSED
    receive(conn, Frame(C.DISCONNECT), version)
    return conn


def client_in(state: State, version: str = "1.2") -> StompConnection:
    """A client connection brought to ``state`` through its public API."""
    conn = StompConnection(Role.CLIENT)
    if state is State.IDLE:
        return conn
    conn.send(CONNECT_ALL)
    if state is State.CONNECTING:
        return conn
    receive(conn, Frame(C.CONNECTED, {"version": version}))
    if state is State.OPEN:
        return conn
    assert state is State.CLOSED
    conn.send(Frame(C.DISCONNECT))
    return conn


def expect_remote_error(conn: StompConnection, data: bytes) -> RemoteProtocolError:
    conn.receive_data(data)
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    return info.value


# --- the first frame --------------------------------------------------------------------------


@pytest.mark.parametrize("command", [C.CONNECT, C.STOMP])
def test_server_accepts_connect_or_stomp_first(command: Command) -> None:
    conn = StompConnection(Role.SERVER)
    frame = Frame(command, {"accept-version": "1.2", "host": "h"})
    assert receive(conn, frame) == frame
    assert conn.state is State.CONNECTING


@pytest.mark.parametrize(
    "frame",
    [
        Frame(C.SEND, {"destination": "/queue/a"}),
        Frame(C.SUBSCRIBE, {"destination": "/queue/a", "id": "0"}),
        Frame(C.DISCONNECT),
        Frame(C.BEGIN, {"transaction": "t"}),
        Frame(C.CONNECTED, {"version": "1.2"}),
        Frame(C.MESSAGE, {"destination": "/q", "message-id": "1", "subscription": "0"}),
        Frame(C.ERROR),
    ],
    ids=lambda f: f.command.value,
)
def test_server_refuses_anything_but_connect_first(frame: Frame) -> None:
    conn = StompConnection(Role.SERVER)
    error = expect_remote_error(conn, encode_frame(frame))
    assert error.code == "unexpected-frame"
    assert error.message == f"expected a CONNECT frame, got {frame.command.value}"
    assert conn.state is State.ERROR


def test_server_refuses_a_frame_before_it_answers_connect() -> None:
    conn = server_in(State.CONNECTING)
    error = expect_remote_error(conn, b"SEND\ndestination:/queue/a\n\n\x00")
    assert error.code == "unexpected-frame"
    assert error.message == "cannot receive SEND in state connecting"
    assert conn.state is State.ERROR


def test_server_refuses_a_second_connect() -> None:
    conn = server_in(State.OPEN)
    error = expect_remote_error(conn, encode_frame(CONNECT_ALL))
    assert error.code == "unexpected-frame"
    assert error.message == "cannot receive CONNECT in state open"


@pytest.mark.parametrize(
    "frame",
    [
        Frame(C.MESSAGE, {"destination": "/q", "message-id": "1", "subscription": "0"}),
        Frame(C.RECEIPT, {"receipt-id": "1"}),
        Frame(C.CONNECTED, {"version": "1.2"}),
        Frame(C.ERROR),
    ],
    ids=lambda f: f.command.value,
)
def test_server_refuses_server_frames(frame: Frame) -> None:
    conn = server_in(State.OPEN)
    error = expect_remote_error(conn, encode_frame(frame))
    assert error.code == "unexpected-frame"
    assert error.message == f"cannot receive {frame.command.value} in state open"


@pytest.mark.parametrize(
    "frame",
    [
        Frame(C.MESSAGE, {"destination": "/q", "message-id": "1", "subscription": "0"}),
        Frame(C.RECEIPT, {"receipt-id": "1"}),
        Frame(C.CONNECTED, {"version": "1.2"}),
        Frame(C.ERROR),
    ],
    ids=lambda f: f.command.value,
)
def test_client_refuses_frames_before_it_connects(frame: Frame) -> None:
    conn = StompConnection(Role.CLIENT)
    error = expect_remote_error(conn, encode_frame(frame))
    assert error.code == "unexpected-frame"
    assert conn.state is State.ERROR


@pytest.mark.parametrize(
    "frame",
    [
        Frame(C.MESSAGE, {"destination": "/q", "message-id": "1", "subscription": "0"}),
        Frame(C.RECEIPT, {"receipt-id": "1"}),
        Frame(C.SEND, {"destination": "/q"}),
    ],
    ids=lambda f: f.command.value,
)
def test_client_refuses_frames_before_connected(frame: Frame) -> None:
    conn = client_in(State.CONNECTING)
    error = expect_remote_error(conn, encode_frame(frame))
    assert error.code == "unexpected-frame"
    assert error.message == f"cannot receive {frame.command.value} in state connecting"


def test_client_receives_error_instead_of_connected() -> None:
    conn = client_in(State.CONNECTING)
    error_frame = Frame(C.ERROR, {"message": "bad login"})
    assert receive(conn, error_frame) == error_frame
    assert conn.state is State.ERROR


# --- version negotiation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "version"),
    [
        pytest.param(None, "1.0", id="absent"),
        pytest.param("1.0", "1.0", id="1.0"),
        pytest.param("1.1", "1.1", id="1.1"),
        pytest.param("1.2", "1.2", id="1.2"),
        pytest.param("1.0,1.1", "1.1", id="1.0-1.1"),
        pytest.param("1.2,1.0", "1.2", id="unordered"),
        pytest.param(" 1.1 , 1.0 ", "1.1", id="spaces"),
        pytest.param("1.1,2.0", "1.1", id="ignores-unknown"),
        pytest.param("1.0,1.1,1.2,1.3", "1.2", id="highest-common"),
    ],
)
def test_negotiate_version(accept: str | None, version: str) -> None:
    assert negotiate_version(accept) == version


@pytest.mark.parametrize("accept", ["2.0", "", "1.3,2.0", "1", "v1.2"])
def test_negotiate_version_none_common(accept: str) -> None:
    with pytest.raises(UnsupportedVersion) as info:
        negotiate_version(accept)
    assert info.value.code == "version"
    assert info.value.message == (
        f"supported protocol versions are 1.0,1.1,1.2; client accepts {accept}"
    )


def test_unsupported_version_message_is_truncated() -> None:
    offered = "9." * 100
    assert UnsupportedVersion(offered).message == (
        f"supported protocol versions are 1.0,1.1,1.2; client accepts {offered[:60]}"
    )


def test_server_refuses_connect_with_no_common_version() -> None:
    conn = StompConnection(Role.SERVER)
    error = expect_remote_error(conn, b"CONNECT\naccept-version:2.0,3.0\nhost:h\n\n\x00")
    assert type(error) is UnsupportedVersion
    assert error.code == "version"
    assert conn.state is State.ERROR


@pytest.mark.parametrize(
    ("headers", "version"),
    [
        pytest.param({"version": "1.1"}, "1.1", id="1.1"),
        pytest.param({"version": "1.2"}, "1.2", id="1.2"),
        pytest.param({}, "1.0", id="absent-means-1.0"),
    ],
)
def test_client_takes_version_from_connected(headers: dict[str, str], version: str) -> None:
    conn = client_in(State.CONNECTING)
    receive(conn, Frame(C.CONNECTED, headers))
    assert conn.version == version
    assert conn.state is State.OPEN


def test_client_refuses_connected_with_unknown_version() -> None:
    conn = client_in(State.CONNECTING)
    error = expect_remote_error(conn, b"CONNECTED\nversion:2.0\n\n\x00")
    assert type(error) is UnsupportedVersion
    assert error.code == "version"
    assert conn.state is State.ERROR


def test_server_version_comes_from_the_connected_it_sends() -> None:
    conn = server_in(State.CONNECTING)
    assert conn.version == "1.0"
    conn.send(Frame(C.CONNECTED, {"version": "1.1"}))
    assert conn.version == "1.1"
    assert conn.state is State.OPEN


@pytest.mark.parametrize(
    ("version", "wire", "headers"),
    [
        pytest.param("1.2", b"SEND\ndestination:/q\na:x\\cy\\r\n\n\x00", {"a": "x:y\r"}, id="1.2"),
        pytest.param("1.1", b"SEND\ndestination:/q\na:x\\cy\n\n\x00", {"a": "x:y"}, id="1.1"),
        pytest.param("1.0", b"SEND\ndestination:/q\na:x\\cy\n\n\x00", {"a": "x\\cy"}, id="1.0"),
    ],
)
def test_server_decodes_with_negotiated_version(
    version: str, wire: bytes, headers: dict[str, str]
) -> None:
    conn = server_in(State.OPEN, version)
    conn.receive_data(wire)
    assert conn.next_event() == Frame(C.SEND, {"destination": "/q", **headers})


@pytest.mark.parametrize(
    ("version", "wire"),
    [
        pytest.param("1.2", b"MESSAGE\na\\cb:c\\nd\n\n\x00", id="1.2"),
        pytest.param("1.0", b"MESSAGE\na:b:c\nd\n\n\x00", id="1.0"),
    ],
)
def test_server_encodes_with_negotiated_version(version: str, wire: bytes) -> None:
    conn = server_in(State.OPEN, version)
    # MESSAGE needs no headers for sending (only received frames are checked).
    assert conn.send(Frame(C.MESSAGE, {"a:b": "c\nd"})) == wire


# --- required headers -------------------------------------------------------------------------

# (id, version, frame the client sends, expected code or None when accepted)
REQUIRED: list[tuple[str, str, Frame, str | None]] = [
    ("send-ok", "1.2", Frame(C.SEND, {"destination": "/q"}), None),
    ("send-no-destination-1.2", "1.2", Frame(C.SEND, {}), "missing-header"),
    ("send-no-destination-1.0", "1.0", Frame(C.SEND, {}), "missing-header"),
    ("subscribe-ok-1.2", "1.2", Frame(C.SUBSCRIBE, {"destination": "/q", "id": "0"}), None),
    ("subscribe-no-id-1.2", "1.2", Frame(C.SUBSCRIBE, {"destination": "/q"}), "missing-header"),
    ("subscribe-no-id-1.1", "1.1", Frame(C.SUBSCRIBE, {"destination": "/q"}), "missing-header"),
    ("subscribe-no-id-1.0", "1.0", Frame(C.SUBSCRIBE, {"destination": "/q"}), None),
    ("subscribe-no-destination", "1.2", Frame(C.SUBSCRIBE, {"id": "0"}), "missing-header"),
    ("unsubscribe-id-1.2", "1.2", Frame(C.UNSUBSCRIBE, {"id": "0"}), None),
    ("unsubscribe-no-id-1.2", "1.2", Frame(C.UNSUBSCRIBE, {"destination": "/q"}), "missing-header"),
    ("unsubscribe-destination-1.0", "1.0", Frame(C.UNSUBSCRIBE, {"destination": "/q"}), None),
    ("unsubscribe-nothing-1.0", "1.0", Frame(C.UNSUBSCRIBE, {}), "missing-header"),
    ("ack-id-1.2", "1.2", Frame(C.ACK, {"id": "1"}), None),
    ("ack-message-id-1.2", "1.2", Frame(C.ACK, {"message-id": "1"}), None),
    ("ack-nothing-1.2", "1.2", Frame(C.ACK, {"subscription": "0"}), "missing-header"),
    ("ack-message-id-1.1", "1.1", Frame(C.ACK, {"message-id": "1", "subscription": "0"}), None),
    ("ack-message-id-1.0", "1.0", Frame(C.ACK, {"message-id": "1"}), None),
    ("ack-nothing-1.0", "1.0", Frame(C.ACK, {}), "missing-header"),
    ("nack-id-1.2", "1.2", Frame(C.NACK, {"id": "1"}), None),
    ("nack-message-id-1.1", "1.1", Frame(C.NACK, {"message-id": "1"}), None),
    ("nack-nothing-1.2", "1.2", Frame(C.NACK, {}), "missing-header"),
    ("nack-in-1.0", "1.0", Frame(C.NACK, {"message-id": "1"}), "unexpected-frame"),
    ("nack-in-1.0-without-id", "1.0", Frame(C.NACK, {}), "missing-header"),
    ("begin-ok", "1.2", Frame(C.BEGIN, {"transaction": "t"}), None),
    ("begin-no-transaction", "1.2", Frame(C.BEGIN, {}), "missing-header"),
    ("commit-no-transaction", "1.1", Frame(C.COMMIT, {}), "missing-header"),
    ("abort-no-transaction", "1.0", Frame(C.ABORT, {}), "missing-header"),
    ("abort-ok", "1.0", Frame(C.ABORT, {"transaction": "t"}), None),
    ("disconnect-needs-nothing", "1.2", Frame(C.DISCONNECT), None),
]


@pytest.mark.parametrize(
    ("version", "frame", "code"),
    [pytest.param(v, f, c, id=name) for name, v, f, c in REQUIRED],
)
def test_server_required_headers(version: str, frame: Frame, code: str | None) -> None:
    conn = server_in(State.OPEN, version)
    conn.receive_data(encode_frame(frame, version))
    if code is None:
        assert conn.next_event() == frame
        assert conn.state is (State.CLOSED if frame.command is C.DISCONNECT else State.OPEN)
        return
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert info.value.code == code
    assert conn.state is State.ERROR


def test_missing_header_message_names_the_header() -> None:
    conn = server_in(State.OPEN)
    error = expect_remote_error(conn, b"SUBSCRIBE\ndestination:/q\n\n\x00")
    assert error.message == "SUBSCRIBE frame is missing the 'id' header"


def test_nack_in_1_0_message() -> None:
    conn = server_in(State.OPEN, "1.0")
    error = expect_remote_error(conn, b"NACK\nmessage-id:1\n\n\x00")
    assert error.message == "NACK does not exist in STOMP 1.0"


MESSAGE_12 = {"destination": "/q", "message-id": "1", "subscription": "0"}

# (id, version, frame the server sends, expected code or None)
CLIENT_REQUIRED: list[tuple[str, str, Frame, str | None]] = [
    ("message-ok-1.2", "1.2", Frame(C.MESSAGE, MESSAGE_12), None),
    (
        "message-no-subscription-1.2",
        "1.2",
        Frame(C.MESSAGE, {"destination": "/q", "message-id": "1"}),
        "missing-header",
    ),
    (
        "message-no-subscription-1.0",
        "1.0",
        Frame(C.MESSAGE, {"destination": "/q", "message-id": "1"}),
        None,
    ),
    (
        "message-no-message-id-1.0",
        "1.0",
        Frame(C.MESSAGE, {"destination": "/q"}),
        "missing-header",
    ),
    (
        "message-no-destination",
        "1.1",
        Frame(C.MESSAGE, {"message-id": "1", "subscription": "0"}),
        "missing-header",
    ),
    ("receipt-ok", "1.2", Frame(C.RECEIPT, {"receipt-id": "r"}), None),
    ("receipt-no-id", "1.2", Frame(C.RECEIPT, {}), "missing-header"),
    ("error-needs-nothing", "1.2", Frame(C.ERROR), None),
]


@pytest.mark.parametrize(
    ("version", "frame", "code"),
    [pytest.param(v, f, c, id=name) for name, v, f, c in CLIENT_REQUIRED],
)
def test_client_required_headers(version: str, frame: Frame, code: str | None) -> None:
    conn = client_in(State.OPEN, version)
    conn.receive_data(encode_frame(frame, version))
    if code is None:
        assert conn.next_event() == frame
        assert conn.state is (State.ERROR if frame.command is C.ERROR else State.OPEN)
        return
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert info.value.code == code
    assert conn.state is State.ERROR


# --- heart-beats ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        pytest.param(None, (0, 0), id="absent"),
        pytest.param("0,0", (0, 0), id="zeros"),
        pytest.param("10,20", (10, 20), id="plain"),
        pytest.param(" 10 , 20 ", (10, 20), id="spaces"),
        pytest.param("007,0", (7, 0), id="leading-zeros"),
    ],
)
def test_parse_heart_beat(value: str | None, parsed: tuple[int, int]) -> None:
    assert parse_heart_beat(value) == parsed


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("10", id="one-number"),
        pytest.param("", id="empty"),
        pytest.param("a,b", id="letters"),
        pytest.param("-1,0", id="negative"),
        pytest.param("1,2,3", id="three-numbers"),
        pytest.param("1,", id="second-missing"),
        pytest.param(",1", id="first-missing"),
        pytest.param("1.5,0", id="fraction"),
        pytest.param("1" * 12 + "," + "1" * 12, id="too-long"),
        # Regression: str.isdigit() accepts these, int() refuses them (ValueError escaped).
        pytest.param("\u00b2,0", id="superscript-two"),
        pytest.param("0,\u2460", id="circled-one"),
        pytest.param("\u0661,0", id="arabic-indic-one"),
    ],
)
def test_parse_heart_beat_malformed(value: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_heart_beat(value)
    assert info.value.code == "malformed"
    assert info.value.message == "heart-beat header must be two non-negative integers"


def test_server_refuses_connect_with_unparseable_heart_beat() -> None:
    # Regression: a superscript digit raised ValueError out of next_event.
    conn = StompConnection(Role.SERVER)
    error = expect_remote_error(conn, "CONNECT\nheart-beat:\u00b2,0\n\n\x00".encode())
    assert error.code == "malformed"
    assert conn.state is State.ERROR


# (id, client's CONNECT heart-beat, server's CONNECTED heart-beat,
#  client->server interval, server->client interval); STOMP 1.2 "Heart-beating":
#  0 if either side says 0, else the larger of the two.
HEART_BEATS: list[tuple[str, str | None, str | None, int, int]] = [
    ("both-absent", None, None, 0, 0),
    ("both-zero", "0,0", "0,0", 0, 0),
    ("client-only", "1000,1000", "0,0", 0, 0),
    ("server-only", "0,0", "1000,1000", 0, 0),
    ("larger-wins", "100,200", "300,400", 400, 300),
    ("client-sends-server-will-not-read", "1000,0", "0,500", 1000, 0),
    ("nobody-wants-to-receive", "500,0", "500,0", 0, 0),
    ("equal", "4000,4000", "4000,4000", 4000, 4000),
    ("client-sends-only", "5000,0", "0,10000", 10000, 0),
    ("server-sends-only", "0,5000", "10000,0", 0, 10000),
]


@pytest.mark.parametrize(
    ("client_hb", "server_hb", "c2s", "s2c"),
    [pytest.param(c, s, a, b, id=name) for name, c, s, a, b in HEART_BEATS],
)
def test_heart_beat_negotiation_agrees_on_both_sides(
    client_hb: str | None, server_hb: str | None, c2s: int, s2c: int
) -> None:
    client = StompConnection(Role.CLIENT)
    server = StompConnection(Role.SERVER)
    connect = {"accept-version": "1.2", "host": "h"}
    if client_hb is not None:
        connect["heart-beat"] = client_hb
    connected = {"version": "1.2"}
    if server_hb is not None:
        connected["heart-beat"] = server_hb
    server.receive_data(client.send(Frame(C.CONNECT, connect)))
    assert server.next_event() == Frame(C.CONNECT, connect)
    client.receive_data(server.send(Frame(C.CONNECTED, connected)))
    assert client.next_event() == Frame(C.CONNECTED, connected)
    assert client.send_heartbeat_ms == c2s
    assert server.receive_heartbeat_ms == c2s
    assert server.send_heartbeat_ms == s2c
    assert client.receive_heartbeat_ms == s2c


def test_deadlines_when_open() -> None:
    client = StompConnection(Role.CLIENT)
    client.send(Frame(C.CONNECT, {"accept-version": "1.2", "heart-beat": "500,250"}))
    receive(client, Frame(C.CONNECTED, {"version": "1.2", "heart-beat": "125,1000"}))
    assert client.send_heartbeat_ms == 1000
    assert client.receive_heartbeat_ms == 250
    assert client.send_deadline(10.0) == 11.0
    assert client.receive_deadline(10.0) == 10.0 + RECEIVE_GRACE * 0.25
    assert client.receive_deadline(10.0) == 10.5


def test_deadlines_are_none_when_heart_beats_are_off() -> None:
    conn = server_in(State.OPEN)
    assert conn.send_heartbeat_ms == 0
    assert conn.receive_heartbeat_ms == 0
    assert conn.send_deadline(10.0) is None
    assert conn.receive_deadline(10.0) is None


def test_server_deadlines_follow_state() -> None:
    server = StompConnection(Role.SERVER)
    assert server.send_deadline(1.0) is None
    receive(server, Frame(C.CONNECT, {"accept-version": "1.2", "heart-beat": "2000,500"}))
    assert server.send_deadline(1.0) is None  # CONNECTING: nothing negotiated yet
    assert server.receive_deadline(1.0) is None
    server.send(Frame(C.CONNECTED, {"version": "1.2", "heart-beat": "1000,1000"}))
    assert server.send_deadline(1.0) == 2.0  # max(1000, 500) ms
    assert server.receive_deadline(1.0) == 5.0  # max(2000, 1000) ms, times RECEIVE_GRACE
    receive(server, Frame(C.DISCONNECT))
    assert server.state is State.CLOSED
    assert server.send_deadline(1.0) is None
    assert server.receive_deadline(1.0) is None


# --- illegal sends ----------------------------------------------------------------------------

# (id, role, state, frame to send, expected message)
ILLEGAL_SENDS: list[tuple[str, Role, State, Frame, str]] = [
    (
        "client-send-before-connect",
        Role.CLIENT,
        State.IDLE,
        Frame(C.SEND),
        "cannot send SEND in state idle",
    ),
    (
        "client-second-connect",
        Role.CLIENT,
        State.CONNECTING,
        CONNECT_ALL,
        "cannot send CONNECT in state connecting",
    ),
    (
        "client-send-before-connected",
        Role.CLIENT,
        State.CONNECTING,
        Frame(C.SEND),
        "cannot send SEND in state connecting",
    ),
    (
        "client-connect-when-open",
        Role.CLIENT,
        State.OPEN,
        Frame(C.STOMP),
        "cannot send STOMP in state open",
    ),
    (
        "client-sends-message",
        Role.CLIENT,
        State.OPEN,
        Frame(C.MESSAGE),
        "cannot send MESSAGE in state open",
    ),
    (
        "client-sends-connected",
        Role.CLIENT,
        State.OPEN,
        Frame(C.CONNECTED),
        "cannot send CONNECTED in state open",
    ),
    (
        "client-sends-error",
        Role.CLIENT,
        State.OPEN,
        Frame(C.ERROR),
        "cannot send ERROR in state open",
    ),
    (
        "client-sends-receipt",
        Role.CLIENT,
        State.OPEN,
        Frame(C.RECEIPT),
        "cannot send RECEIPT in state open",
    ),
    (
        "client-send-after-disconnect",
        Role.CLIENT,
        State.CLOSED,
        Frame(C.SEND),
        "cannot send SEND in state closed",
    ),
    (
        "client-second-disconnect",
        Role.CLIENT,
        State.CLOSED,
        Frame(C.DISCONNECT),
        "cannot send DISCONNECT in state closed",
    ),
    (
        "server-connected-before-connect",
        Role.SERVER,
        State.IDLE,
        Frame(C.CONNECTED),
        "cannot send CONNECTED in state idle",
    ),
    (
        "server-message-before-connected",
        Role.SERVER,
        State.CONNECTING,
        Frame(C.MESSAGE),
        "cannot send MESSAGE in state connecting",
    ),
    (
        "server-receipt-before-connected",
        Role.SERVER,
        State.CONNECTING,
        Frame(C.RECEIPT),
        "cannot send RECEIPT in state connecting",
    ),
    (
        "server-second-connected",
        Role.SERVER,
        State.OPEN,
        Frame(C.CONNECTED),
        "cannot send CONNECTED in state open",
    ),
    (
        "server-sends-send",
        Role.SERVER,
        State.OPEN,
        Frame(C.SEND),
        "cannot send SEND in state open",
    ),
    (
        "server-sends-connect",
        Role.SERVER,
        State.OPEN,
        CONNECT_ALL,
        "cannot send CONNECT in state open",
    ),
    (
        "server-message-after-disconnect",
        Role.SERVER,
        State.CLOSED,
        Frame(C.MESSAGE),
        "cannot send MESSAGE in state closed",
    ),
]


@pytest.mark.parametrize(
    ("role", "state", "frame", "message"),
    [pytest.param(r, s, f, m, id=name) for name, r, s, f, m in ILLEGAL_SENDS],
)
def test_illegal_send(role: Role, state: State, frame: Frame, message: str) -> None:
    conn = client_in(state) if role is Role.CLIENT else server_in(state)
    assert conn.state is state
    with pytest.raises(LocalProtocolError) as info:
        conn.send(frame)
    assert info.value.message == message


@pytest.mark.parametrize("state", [State.IDLE, State.CONNECTING, State.OPEN, State.CLOSED])
def test_server_may_send_error_in_any_state_but_error(state: State) -> None:
    conn = server_in(state)
    assert conn.send(Frame(C.ERROR, {"message": "bye"})) == b"ERROR\nmessage:bye\n\n\x00"
    assert conn.state is State.ERROR
    with pytest.raises(LocalProtocolError) as info:
        conn.send(Frame(C.ERROR, {"message": "again"}))
    assert info.value.message == "cannot send ERROR in state error"


def test_server_may_send_receipt_after_disconnect() -> None:
    conn = server_in(State.CLOSED)
    assert conn.send(Frame(C.RECEIPT, {"receipt-id": "9"})) == b"RECEIPT\nreceipt-id:9\n\n\x00"
    assert conn.state is State.CLOSED


# --- after an error, after DISCONNECT ---------------------------------------------------------


def test_connection_refuses_input_after_remote_error() -> None:
    conn = server_in(State.OPEN)
    expect_remote_error(conn, b"BOGUS\n\n\x00")
    assert conn.state is State.ERROR
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(b"SEND\ndestination:/q\n\n\x00")
    assert info.value.code == "broken"
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert info.value.code == "broken"


def test_connection_refuses_input_after_state_error() -> None:
    conn = server_in(State.OPEN)
    # The decoder is fine; the state machine refused the frame.
    error = expect_remote_error(conn, b"SEND\n\n\x00")
    assert error.code == "missing-header"
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(b"SEND\ndestination:/q\n\n\x00")
    assert info.value.code == "broken"


def test_frames_buffered_behind_an_error_are_not_returned() -> None:
    conn = server_in(State.OPEN)
    conn.receive_data(b"SEND\n\n\x00SEND\ndestination:/q\n\n\x00")
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert info.value.code == "missing-header"
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    assert conn.state is State.ERROR


def test_connection_refuses_input_after_sending_error() -> None:
    conn = server_in(State.OPEN)
    conn.send(Frame(C.ERROR, {"message": "bye"}))
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(b"\n")
    assert info.value.code == "broken"


def test_client_refuses_input_after_receiving_error() -> None:
    conn = client_in(State.OPEN)
    assert receive(conn, Frame(C.ERROR, {"message": "bye"})) == Frame(C.ERROR, {"message": "bye"})
    assert conn.state is State.ERROR
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(b"RECEIPT\nreceipt-id:1\n\n\x00")
    assert info.value.code == "broken"


def test_disconnect_closes_server_and_later_frame_is_an_error() -> None:
    conn = server_in(State.OPEN)
    assert receive(conn, Frame(C.DISCONNECT, {"receipt": "1"})) == Frame(
        C.DISCONNECT, {"receipt": "1"}
    )
    assert conn.state is State.CLOSED
    conn.receive_data(b"\n\r\n")  # heart-beats are still fine
    assert conn.next_event() is NEED_DATA
    error = expect_remote_error(conn, b"SEND\ndestination:/q\n\n\x00")
    assert error.code == "unexpected-frame"
    assert error.message == "received SEND after DISCONNECT"
    assert conn.state is State.ERROR


def test_client_after_disconnect_still_takes_messages_and_receipt() -> None:
    conn = client_in(State.CLOSED)
    message = Frame(C.MESSAGE, {**MESSAGE_12, "content-length": "4"}, b"late")
    assert receive(conn, message) == message
    assert receive(conn, Frame(C.RECEIPT, {"receipt-id": "1"})) == Frame(
        C.RECEIPT, {"receipt-id": "1"}
    )
    assert conn.state is State.CLOSED
    error = expect_remote_error(conn, b"CONNECTED\nversion:1.2\n\n\x00")
    assert error.code == "unexpected-frame"
    assert error.message == "received CONNECTED after DISCONNECT"


def test_connection_errors_propagate_decoder_codes() -> None:
    conn = server_in(State.OPEN)
    error = expect_remote_error(conn, b"SEND\ncontent-length:x\n\n\x00")
    assert error.code == "malformed"
    assert conn.state is State.ERROR


def test_buffered_and_repr() -> None:
    conn = StompConnection(Role.SERVER)
    assert repr(conn) == "<StompConnection server idle v1.0>"
    conn.receive_data(b"CONNECT\n")
    assert conn.buffered == 8
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"accept-version:1.2\n\n\x00SE")
    assert conn.next_event() == Frame(C.CONNECT, {"accept-version": "1.2"})
    assert conn.buffered == 2
    conn.send(Frame(C.CONNECTED, {"version": "1.2"}))
    assert repr(conn) == "<StompConnection server open v1.2>"


# --- a whole conversation ---------------------------------------------------------------------


def test_full_exchange_client_to_server() -> None:
    client = StompConnection(Role.CLIENT)
    server = StompConnection(Role.SERVER)

    def to_server(frame: Frame) -> Frame:
        server.receive_data(client.send(frame))
        event = server.next_event()
        assert server.next_event() is NEED_DATA
        assert isinstance(event, Frame)
        return event

    def to_client(frame: Frame) -> Frame:
        client.receive_data(server.send(frame))
        event = client.next_event()
        assert client.next_event() is NEED_DATA
        assert isinstance(event, Frame)
        return event

    connect = Frame(
        C.CONNECT,
        {"accept-version": "1.1,1.2", "host": "h", "login": "u:1", "heart-beat": "0,1000"},
    )
    assert to_server(connect) == connect
    assert client.state is State.CONNECTING
    assert server.state is State.CONNECTING
    version = negotiate_version(connect.headers["accept-version"])
    assert version == "1.2"
    connected = Frame(C.CONNECTED, {"version": version, "heart-beat": "500,0"})
    assert to_client(connected) == connected
    assert (client.state, server.state) == (State.OPEN, State.OPEN)
    assert (client.version, server.version) == ("1.2", "1.2")
    assert (server.send_heartbeat_ms, client.receive_heartbeat_ms) == (1000, 1000)
    assert (client.send_heartbeat_ms, server.receive_heartbeat_ms) == (0, 0)

    subscribe = Frame(C.SUBSCRIBE, {"id": "s:1", "destination": "/topic/a.>", "ack": "client"})
    assert to_server(subscribe) == subscribe
    send = Frame(
        C.SEND,
        {"destination": "/topic/a.b", "note": "x:y\nz\\", "receipt": "r1", "content-length": "3"},
        b"\x00\x01\x02",
    )
    assert to_server(send) == send
    receipt = Frame(C.RECEIPT, {"receipt-id": "r1"})
    assert to_client(receipt) == receipt
    message = Frame(
        C.MESSAGE,
        {
            "subscription": "s:1",
            "message-id": "ID:1",
            "destination": "/topic/a.b",
            "note": "x:y\nz\\",
            "content-length": "3",
        },
        b"\x00\x01\x02",
    )
    assert to_client(message) == message
    ack = Frame(C.ACK, {"id": "ID:1"})
    assert to_server(ack) == ack

    # A heart-beat from the server is just an EOL; the client yields nothing for it.
    client.receive_data(b"\n")
    assert client.next_event() is NEED_DATA
    assert client.buffered == 0

    disconnect = Frame(C.DISCONNECT, {"receipt": "bye"})
    assert to_server(disconnect) == disconnect
    assert (client.state, server.state) == (State.CLOSED, State.CLOSED)
    assert to_client(Frame(C.RECEIPT, {"receipt-id": "bye"})) == Frame(
        C.RECEIPT, {"receipt-id": "bye"}
    )
    assert (client.state, server.state) == (State.CLOSED, State.CLOSED)


def test_full_exchange_in_1_0_keeps_escapes_literal() -> None:
    client = StompConnection(Role.CLIENT)
    server = StompConnection(Role.SERVER)
    server.receive_data(client.send(Frame(C.CONNECT, {"login": "u"})))
    assert server.next_event() == Frame(C.CONNECT, {"login": "u"})
    client.receive_data(server.send(Frame(C.CONNECTED, {"session": "1"})))
    assert client.next_event() == Frame(C.CONNECTED, {"session": "1"})
    assert (client.version, server.version) == ("1.0", "1.0")
    send = Frame(C.SEND, {"destination": "/queue/a", "note": "a\\cb:c"})
    data = client.send(send)
    assert data == b"SEND\ndestination:/queue/a\nnote:a\\cb:c\n\n\x00"
    server.receive_data(data)
    assert server.next_event() == send
    # NACK does not exist in 1.0: refused by the server (the client may still encode it).
    server.receive_data(client.send(Frame(C.NACK, {"message-id": "1"})))
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert info.value.code == "unexpected-frame"
