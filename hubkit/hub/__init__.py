"""Hub I/O: push planning, batched commits, verification, remote reads, and a local Hub-compatible server."""
