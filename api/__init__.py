"""peerplane HTTP front end (aiohttp)."""
