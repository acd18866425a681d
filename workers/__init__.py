"""Long-running processes: the embedded Temporal server, the peer's worker and its listener."""
