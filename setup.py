"""Build configuration beyond pyproject.toml: the optional C accelerators (the STOMP codec's
hot paths, the journal's message-record decoding).

``optional=True``: without a C compiler the build skips them (with a warning) and Dovecote runs
on the pure-Python code they shadow, which is the reference
(src/dovecote/protocols/stomp/speedups.py, src/dovecote/store/record.py).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "dovecote.protocols.stomp._speedups",
            ["src/dovecote/protocols/stomp/_speedups.c"],
            optional=True,
        ),
        Extension(
            "dovecote.store._records",
            ["src/dovecote/store/_records.c"],
            optional=True,
        ),
    ]
)
