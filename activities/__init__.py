"""Thin Temporal activities over the wake's domain steps (xmesh_agent.wake)."""
