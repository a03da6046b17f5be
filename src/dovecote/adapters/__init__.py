"""Protocol adapters: the only place a protocol meets the core."""
