"""Build configuration beyond pyproject.toml: the optional C accelerator of the STOMP codec.

``optional=True``: without a C compiler the build skips it (with a warning) and Dovecote runs on
the pure-Python codec, which is the reference (src/dovecote/protocols/stomp/speedups.py).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "dovecote.protocols.stomp._speedups",
            ["src/dovecote/protocols/stomp/_speedups.c"],
            optional=True,
        )
    ]
)
