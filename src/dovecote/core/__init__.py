"""The broker core: addresses, queues, dispatch, acknowledgements and transactions.

No asyncio, no sockets, no protocol: what the core needs from outside (durability, the clock)
is a ``typing.Protocol`` in :mod:`dovecote.core.ports`, injected by the server.
"""
