"""Deterministic orchestration only: the wake of a peer, step by step."""
