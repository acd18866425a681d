"""xmesh-agent: autonomous LLM peers on an MMP mesh; every wake a durable Temporal workflow."""

__version__ = "0.2.0"
