"""Hub writes: push planning, batched commits, verification, and a local Hub-compatible server."""
