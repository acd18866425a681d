"""The WebSocket relay: its server, our client of it, and one connected member."""
