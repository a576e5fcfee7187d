"""Hub I/O: push planning, batched commits, verification, remote reads, and a local Hub-compatible server."""


def is_network_error(exc: BaseException) -> bool:
    """A dropped or refused connection, whichever HTTP stack this huggingface_hub version uses."""
    return isinstance(exc, OSError) or type(exc).__module__.split(".")[0] in (
        "httpx",
        "httpx2",
        "httpcore",
        "httpcore2",
        "requests",
        "urllib3",
    )
