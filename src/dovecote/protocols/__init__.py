"""Sans-I/O protocol codecs and connection state machines: bytes in, events out.

Nothing here awaits, reads a socket, logs or reads the clock; timers are deadlines the caller
passes in. Only the standard library is imported.
"""
