"""Client side: the same sans-I/O codecs in the client role."""
