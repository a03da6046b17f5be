from typing import Any

def scan_frame(
    buf: bytes | bytearray,
    pos: int,
    max_header_bytes: int,
    max_headers: int,
    max_body_bytes: int,
    commands: dict[bytes, Any],
) -> tuple[Any, dict[str, str], bytes, int] | None: ...
def encode_tail(
    message_id: str,
    destination_line: str,
    expires: int,
    priority: int,
    timestamp: int,
    persistent: bool,
    properties: dict[str, str],
    body: bytes,
    mode: int,
) -> bytes: ...
