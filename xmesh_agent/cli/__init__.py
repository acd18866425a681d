"""The `xmesh-agent` command line (typer), one module per command group."""
