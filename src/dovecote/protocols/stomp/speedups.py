"""The optional C accelerator of the STOMP codec (``_speedups.c``), or None without it.

Two functions, each the hot path of one direction:

- ``scan_frame``: decodes the common frame (ASCII headers without escapes or CRs, a plain
  ``content-length`` or none) and answers None for everything else, so that the pure-Python
  decoder (:mod:`dovecote.protocols.stomp.codec`) parses it: incomplete frames, every error,
  every unusual header block. The Python decoder is the reference; the accelerator never
  decides anything on its own.
- ``encode_tail``: the shared part of a MESSAGE frame, byte for byte what
  :meth:`dovecote.adapters.stomp_encoding.MessageEncoder.tail` builds in Python.

The build skips the extension when there is no C compiler (setup.py), and
``DOVECOTE_NO_SPEEDUPS=1`` turns it off at run time; Dovecote then runs on the pure-Python
codec. The codec's tests run against both (tests/protocols/stomp/test_speedups.py compares
them on fixtures and on hypothesis-generated input).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

ScanFrame = Callable[
    [bytes | bytearray, int, int, int, int, dict[bytes, Any]],
    tuple[Any, dict[str, str], bytes, int] | None,
]
EncodeTail = Callable[[str, str, int, int, int, bool, dict[str, str], bytes, int], bytes]

# The escaping encode_tail applies per version: STOMP 1.0 none, 1.1 all but CR, 1.2 all.
ESCAPE_MODES = {"1.0": 0, "1.1": 1, "1.2": 2}

scan_frame: ScanFrame | None = None
encode_tail: EncodeTail | None = None

if not os.environ.get("DOVECOTE_NO_SPEEDUPS"):
    try:
        from dovecote.protocols.stomp import _speedups
    except ImportError:  # not built (no compiler): the pure-Python codec serves
        pass
    else:
        scan_frame = _speedups.scan_frame
        encode_tail = _speedups.encode_tail

AVAILABLE = scan_frame is not None
