"""STOMP 1.0, 1.1 and 1.2: frames, a sans-I/O codec, and the connection state machine."""

from dovecote.protocols.stomp.codec import NEED_DATA, FrameDecoder, FrameLimits, NeedData
from dovecote.protocols.stomp.connection import Role, State, StompConnection, UnsupportedVersion
from dovecote.protocols.stomp.frames import Command, Frame, encode_frame

__all__ = [
    "NEED_DATA",
    "Command",
    "Frame",
    "FrameDecoder",
    "FrameLimits",
    "NeedData",
    "Role",
    "State",
    "StompConnection",
    "UnsupportedVersion",
    "encode_frame",
]
