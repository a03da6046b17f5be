"""asyncio transports: listeners that accept connections and move bytes; no protocol here."""
