"""Stores implement the core's Store port: :class:`MemoryStore` now, the journal next."""
