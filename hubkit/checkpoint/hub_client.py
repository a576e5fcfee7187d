"""How hubkit talks to a Hub: every request through huggingface_hub's shared client, set up here once so that
every wait is bounded and every answer is capped.

- **Timeouts**: each connect and each read waits at most ``HUBKIT_HUB_TIMEOUT`` (``READ`` or ``CONNECT,READ``
  seconds; default 10,60), also where huggingface_hub would wait without end.
- **Bounded sleeps**: a ``Retry-After`` longer than the read timeout is shortened to it.
- **Capped answers**: a Range request accepts what it asked for plus a margin (a server that ignores ``Range``
  is refused, not read whole); an API answer (and any error answer) at most 64 MiB, arriving within 10 read
  timeouts. File downloads without ``Range`` are left to the library, which writes them to disk as they come.
- **Listings**: pagination that repeats itself or never ends is refused.
- **Offline**: ``HF_HUB_OFFLINE`` ends a command that needs the Hub at once, with one line.

Each refusal is a HubkitError: one line, exit 2.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

from hubkit.errors import HubkitError, is_network_error, redact

TIMEOUT_ENV = "HUBKIT_HUB_TIMEOUT"
CONNECT_TIMEOUT_S, READ_TIMEOUT_S = 10.0, 60.0
#: The most any answer other than a file download may hold (the largest, a weight index, is ~31 MB).
ANSWER_LIMIT = 64 * 1024**2
#: The longest an answer (other than a file download) may take to arrive, in read timeouts: a server that sends
#: a byte now and then never waits out the read timeout.
ANSWER_TIMEOUTS = 10
#: What a Range answer may hold beyond the bytes asked for.
RANGE_MARGIN = 64 * 1024
#: The most entries, and pages, a repo listing may hold.
LISTING_LIMIT, LISTING_PAGES = 200_000, 1_000
#: Tries of one range read.
RANGE_READ_TRIES = 3

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_install_lock = threading.Lock()
_listing = threading.local()  # the pages asked for by the listing this thread is reading
_installed = False


def hub_timeouts() -> tuple[float, float]:
    """(connect, read) seconds from ``HUBKIT_HUB_TIMEOUT``; a value that is not a positive number is exit 2."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return CONNECT_TIMEOUT_S, READ_TIMEOUT_S
    parts = raw.split(",")
    try:
        values = [float(part) for part in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or not all(0 < value < float("inf") for value in values):
        raise HubkitError(
            f"{TIMEOUT_ENV}={raw!r} is not READ or CONNECT,READ seconds (positive numbers); e.g. {TIMEOUT_ENV}=10,60"
        )
    return (min(values[0], CONNECT_TIMEOUT_S), values[0]) if len(values) == 1 else (values[0], values[1])


def is_offline() -> bool:
    """huggingface_hub's offline mode, also when ``HF_HUB_OFFLINE`` was set after it was imported."""
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").upper()
    return constants.is_offline_mode() or flags in ("1", "ON", "YES", "TRUE")


def require_online(what: str) -> None:
    """Exit 2 at once, with no retry, when offline mode is on: ``what`` needs the Hub."""
    if is_offline():
        raise HubkitError(f"HF_HUB_OFFLINE is set: {what} needs the Hub; unset HF_HUB_OFFLINE to go online")


def endpoint() -> str | None:
    """The Hub's address from ``HF_ENDPOINT`` (None: huggingface_hub's default)."""
    return os.environ.get("HF_ENDPOINT") or None


def hf_api(what: str) -> Any:
    """An ``HfApi`` for ``HF_ENDPOINT``, its requests bounded; exit 2 at once when offline."""
    from huggingface_hub import HfApi

    require_online(what)
    install()
    return HfApi(endpoint=endpoint())


def install() -> None:
    """Make huggingface_hub's shared client bound every wait and cap every answer (once per process)."""
    global _installed
    hub_timeouts()  # a bad setting is an error before any request
    with _install_lock:
        if _installed:
            return
        from huggingface_hub import get_session, set_client_factory

        library = get_session()  # its own hooks (offline mode, request ids) stay first
        client_class, library_hooks = type(library), list(library.event_hooks["request"])
        http = importlib.import_module(client_class.__module__.split(".")[0])  # httpx or httpx2

        def client() -> Any:
            connect, read = hub_timeouts()
            return client_class(
                event_hooks={"request": [*library_hooks, _bound_waits], "response": [_cap_answer(http)]},
                follow_redirects=True,
                timeout=http.Timeout(read, connect=connect),
            )

        set_client_factory(client)
        _installed = True


def _bound_waits(request: Any) -> None:
    """Each wait of this request at most the configured timeout, also where the library asked for none."""
    if is_offline():  # the library's own error, which its callers know (a download falls back on the cache)
        from huggingface_hub.errors import OfflineModeIsEnabled

        raise OfflineModeIsEnabled(f"HF_HUB_OFFLINE is set: cannot reach {redact(str(request.url))}")
    connect, read = hub_timeouts()
    given = request.extensions.get("timeout") or {}
    limits = {"connect": connect, "read": read, "write": read, "pool": read}
    request.extensions["timeout"] = {
        key: limit if given.get(key) is None else min(given[key], limit) for key, limit in limits.items()
    }


def _guard_listing(response: Any, next_page: str | None) -> None:
    """While :func:`list_tree` reads a listing: no page named as next once it was read, at most ``LISTING_PAGES``
    pages (a page asked for again after an error answer is a retry, not a cycle)."""
    pages: set[str] | None = getattr(_listing, "pages", None)
    if pages is None or response.status_code >= 400 or next_page is None:
        return
    pages.add(str(response.request.url))
    if next_page in pages:
        raise HubkitError(f"the Hub's listing goes round in a cycle ({redact(next_page)} again); check HF_ENDPOINT")
    if len(pages) >= LISTING_PAGES:
        raise HubkitError(f"the Hub's listing has more than {LISTING_PAGES:,} pages; check HF_ENDPOINT")


def _cap_answer(http: Any) -> Any:
    stream_class = _capped_stream_class(http.SyncByteStream)

    def cap(response: Any) -> None:
        """Refuse an answer larger than the request can need, before or while it is read."""
        request = response.request
        url = redact(str(request.url))
        next_page = response.links.get("next", {}).get("url")
        if next_page is not None and next_page == str(request.url):
            raise HubkitError(f"the listing at {url} names itself as its next page; check HF_ENDPOINT")
        _guard_listing(response, next_page)
        _shorten_waits(response.headers)
        asked = _range_length(request.headers.get("range"))
        declared = response.headers.get("content-length")
        size = int(declared) if declared and declared.isdigit() else None
        if asked is not None:
            limit = asked + RANGE_MARGIN
            if response.status_code == 200 and (size is None or size > limit):
                problem = f"the server ignored the Range request for {url} (asked for {asked:,} bytes)"
            else:
                problem = f"the server sent more than the {asked:,} bytes asked for from {url}"
        elif response.status_code < 400 and not _is_api(request.url.path):
            return  # a file download (or where it was redirected): the library streams it to disk
        else:
            limit, problem = ANSWER_LIMIT, f"the answer from {url} is larger than {ANSWER_LIMIT // 1024**2} MiB"
        if size is not None and size > limit:
            raise HubkitError(f"{problem}; check HF_ENDPOINT")
        response.stream = stream_class(response.stream, limit, problem, url)

    return cap


def _is_api(path: str) -> bool:
    """A Hub API route (JSON answers), as opposed to a file (``/resolve/``, a CDN or storage address)."""
    return "/api/" in path or "/info/lfs/" in path


def _shorten_waits(headers: Any) -> None:
    """A ``Retry-After`` (or ``RateLimit`` reset) longer than the read timeout is shortened to it: the client
    sleeps as long as the server says, and a server may say a year."""
    longest = int(hub_timeouts()[1]) + 1
    retry_after = headers.get("retry-after")
    if retry_after is not None and (not retry_after.strip().isdigit() or int(retry_after) > longest):
        headers["retry-after"] = str(longest)
    ratelimit = headers.get("ratelimit")
    if ratelimit is not None:
        headers["ratelimit"] = re.sub(r"\bt=(\d+)", lambda found: f"t={min(int(found[1]), longest)}", ratelimit)


def _range_length(header: str | None) -> int | None:
    """How many bytes a ``Range: bytes=A-B`` (or ``bytes=-N``) header asks for; None for no or an open range."""
    found = _RANGE.fullmatch((header or "").strip())
    if found is None or not found[2]:
        return None
    return int(found[2]) if not found[1] else max(int(found[2]) - int(found[1]) + 1, 0)


@functools.cache
def _capped_stream_class(base: type) -> type:
    """A body stream of the client's HTTP library that ends with a HubkitError past its limit."""

    class CappedStream(base):  # type: ignore[misc]
        def __init__(self, stream: Any, limit: int, problem: str, url: str) -> None:
            self.stream, self.limit, self.problem, self.url = stream, limit, problem, url

        def __iter__(self) -> Iterator[bytes]:
            received, deadline = 0, time.monotonic() + ANSWER_TIMEOUTS * hub_timeouts()[1]
            for chunk in self.stream:
                received += len(chunk)
                if received > self.limit:
                    raise HubkitError(f"{self.problem}; check HF_ENDPOINT")
                if time.monotonic() > deadline:
                    raise HubkitError(
                        f"{self.url} sent its answer too slowly (more than {ANSWER_TIMEOUTS} read timeouts); "
                        "check HF_ENDPOINT and the network"
                    )
                yield chunk

        def close(self) -> None:
            self.stream.close()

    return CappedStream


def list_tree(api: Any, repo: str, revision: str) -> list[Any]:
    """The entries of ``repo`` at ``revision`` (recursive), refusing a listing that repeats itself (a page or an
    entry twice) or never ends (more than ``LISTING_LIMIT`` entries or ``LISTING_PAGES`` pages)."""
    install()
    entries: list[Any] = []
    seen: set[str] = set()
    _listing.pages = set()
    try:
        for entry in api.list_repo_tree(repo, revision=revision, recursive=True):
            if entry.path in seen:
                raise HubkitError(
                    f"the Hub listed {entry.path} of {repo} twice (its pages go round in a cycle); check HF_ENDPOINT"
                )
            if len(seen) >= LISTING_LIMIT:
                raise HubkitError(
                    f"the Hub's listing of {repo} has more than {LISTING_LIMIT:,} entries; check HF_ENDPOINT"
                )
            seen.add(entry.path)
            entries.append(entry)
    finally:
        del _listing.pages
    return entries


def read_file(api: Any, repo: str, path: str, revision: str, limit: int) -> bytes | None:
    """``path`` of ``repo`` at ``revision``, at most ``limit`` bytes (asked for as a range, so capped like one),
    read straight into memory: no cache, so no file of another endpoint's is ever taken for it. None when the
    Hub has no such file."""
    from huggingface_hub import get_session, hf_hub_url, hf_raise_for_status
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

    install()
    url = hf_hub_url(repo, path, revision=revision, endpoint=api.endpoint)
    response = get_session().get(url, headers={**build_hf_headers(token=api.token), "Range": f"bytes=0-{limit}"})
    if response.status_code == 404:
        return None
    if response.status_code == 416:  # an empty file
        return b""
    hf_raise_for_status(response)
    data: bytes = response.content
    if len(data) > limit:
        raise HubkitError(f"{path} of {repo} on {redact(str(api.endpoint))} is larger than {limit:,} bytes")
    return data


def read_range(api: Any, repo: str, path: str, revision: str, start: int, length: int) -> bytes:
    """``length`` bytes of ``path`` from ``start`` (fewer at its end) by a Range request, tried at most
    ``RANGE_READ_TRIES`` times (a dropped connection, a timeout, a 5xx answer); FileNotFoundError when the Hub
    has no such file."""
    from huggingface_hub import get_session, hf_hub_url, hf_raise_for_status
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

    install()
    url = hf_hub_url(repo, path, revision=revision, endpoint=api.endpoint)
    headers = {**build_hf_headers(token=api.token), "Range": f"bytes={start}-{start + length - 1}"}
    for attempt in range(1, RANGE_READ_TRIES + 1):
        try:
            response = get_session().get(url, headers=headers)
            if response.status_code < 500 or attempt == RANGE_READ_TRIES:
                break
        except HubkitError:
            raise
        except Exception as exc:
            if not is_network_error(exc) or attempt == RANGE_READ_TRIES:
                raise
        time.sleep(attempt)
    if response.status_code == 404:
        raise FileNotFoundError(f"{path} is not in {repo}@{revision}")
    if response.status_code == 416:  # the range starts past the end
        return b""
    hf_raise_for_status(response)
    data: bytes = response.content
    return data[start : start + length] if response.status_code == 200 else data[:length]
