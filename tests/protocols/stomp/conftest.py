"""Every codec test here runs twice: on the C accelerator (with the pure-Python decoder behind
it, as in production) and on the pure-Python decoder alone (what runs without a compiler)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dovecote.protocols.stomp import speedups


@pytest.fixture(autouse=True, params=["accelerated", "pure-python"])
def codec_implementation(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "accelerated" and not speedups.AVAILABLE:
        pytest.skip("the C accelerator is not built here")
    with pytest.MonkeyPatch.context() as patch:
        if request.param == "pure-python":
            patch.setattr(speedups, "scan_frame", None)
            patch.setattr(speedups, "encode_tail", None)
        yield request.param
