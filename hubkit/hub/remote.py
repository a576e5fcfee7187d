"""The Hub side of a push: the client, what a failure means (transient, permanent, or a bug), retries, and the
upload transport (Xet where the endpoint offers it, else classic LFS).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from hubkit.checkpoint.hub_client import TIMEOUT_ENV, hf_api, hub_timeouts, list_tree, require_online
from hubkit.errors import ExitCode, HubkitError, is_network_error, redact
from hubkit.hub.local import LocalFile, StatKey, stat_key
from hubkit.reads import check_token_file

RETRYABLE_STATUS = (408, 429, 500, 502, 503, 504)


class FileChanged(Exception):
    """A file changed while it was being uploaded: a transient fault, the next try uploads it as it is then."""


class PushIncomplete(HubkitError):
    """Transient faults outlasted the retries: what was committed stays, and a rerun resumes (exit 1)."""

    exit_code = ExitCode.ARTIFACT_FAILED


@dataclass(frozen=True)
class Fault:
    """What went wrong, in the terms that decide what to do about it."""

    transient: bool
    detail: str
    status: int | None = None
    unreachable: bool = False  # no connection to the endpoint at all


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


def classify(exc: BaseException) -> Fault | None:
    """The fault behind ``exc``, looking through the client's wrappers (e.g. its RuntimeError "Error while
    uploading"); None when it is none of the Hub's or the network's doing (a bug: not retried, not hidden)."""
    from huggingface_hub.errors import HfHubHTTPError

    for link in _chain(exc):
        if isinstance(link, FileChanged):
            return Fault(True, str(link))
        if isinstance(link, HfHubHTTPError):
            status = link.response.status_code if link.response is not None else None
            detail = f"HTTP {status}: {redact(str(link).splitlines()[0][:200])}"
            return Fault(status in RETRYABLE_STATUS, detail, status)
        if isinstance(link, json.JSONDecodeError):
            return Fault(False, "an answer that is not JSON (is HF_ENDPOINT a Hub?)")
        if isinstance(link, ValueError) and str(link).startswith("LFS batch API returned errors"):
            return Fault(False, str(link).replace("\n", " ")[:300])
        if type(link).__module__.split(".")[0] == "hf_xet":
            return _xet_fault(link)
        if type(link).__name__ == "OfflineModeIsEnabled":
            require_online("this command")
        if _is_timeout(link):
            connect, read = hub_timeouts()
            waited = connect if "Connect" in type(link).__name__ else read
            return Fault(True, f"no answer within {waited:g} s; {TIMEOUT_ENV} sets the wait", unreachable=True)
        if is_network_error(link):
            text = redact(str(link).splitlines()[0][:200]) if str(link) else type(link).__name__
            client_error = re.search(r"client error \((4\d\d)", text)  # hf_xet: a 4xx answer, as text only
            if client_error and int(client_error[1]) not in RETRYABLE_STATUS:
                return Fault(False, text, int(client_error[1]))
            unreachable = isinstance(link, ConnectionRefusedError) or type(link).__name__ in ("ConnectError",)
            return Fault(True, text, unreachable=unreachable)
    return None


def _is_timeout(link: BaseException) -> bool:
    """A connect or read that waited out its timeout (the server accepted, or not, and never answered)."""
    return isinstance(link, TimeoutError) or (is_network_error(link) and type(link).__name__.endswith("Timeout"))


def _xet_fault(link: BaseException) -> Fault:
    """hf_xet's own errors: authentication and missing objects are permanent, the rest are transfers."""
    permanent = isinstance(link, PermissionError | FileNotFoundError)
    return Fault(not permanent, f"Xet: {str(link).splitlines()[0][:200] if str(link) else type(link).__name__}")


@dataclass
class Retry:
    """Retries with exponential backoff, honouring ``Retry-After``."""

    tries: int
    backoff_s: float
    endpoint: str

    def call(
        self,
        what: str,
        call: Callable[[], Any],
        landed: Callable[[], bool] | None = None,
        before_retry: Callable[[], None] | None = None,
        retry_unreachable: bool = True,
    ) -> Any:
        """``call()`` until it succeeds; permanent faults and bugs are raised at once. ``landed`` recognises a
        call that took effect although its answer was lost (a commit), so it is not made twice."""
        delay = self.backoff_s
        for attempt in range(1, self.tries + 1):
            try:
                return call()
            except (KeyboardInterrupt, HubkitError):
                raise
            except Exception as exc:
                fault = classify(exc)
                if fault is None:
                    raise
                if not fault.transient:
                    raise HubkitError(f"the Hub refused {what}: {fault.detail}") from None
                if attempt == self.tries or (fault.unreachable and not retry_unreachable):
                    self.give_up(what, fault)
                wait = _retry_after(exc) or delay
            if landed is not None and self._landed(landed):
                return None
            time.sleep(wait)
            delay = min(delay * 2, 60.0)
            if before_retry is not None:
                before_retry()
        raise AssertionError("unreachable")

    @staticmethod
    def _landed(landed: Callable[[], bool]) -> bool:
        """Whether the failed call took effect after all; unknown (a fault while asking) counts as no."""
        try:
            return landed()
        except Exception as exc:
            if classify(exc) is None:
                raise
            return False

    def give_up(self, what: str, fault: Fault) -> None:
        if fault.unreachable:
            raise HubkitError(
                f"cannot reach the Hub at {redact(self.endpoint)} ({what}: {fault.detail}); "
                "check HF_ENDPOINT and the network, then rerun the push: it resumes"
            )
        raise PushIncomplete(
            f"{what} failed after {self.tries} tries ({fault.detail}); rerun the push: it resumes where it stopped"
        )


def _retry_after(exc: BaseException) -> float | None:
    from huggingface_hub.errors import HfHubHTTPError

    for link in _chain(exc):
        if isinstance(link, HfHubHTTPError) and link.response is not None:
            value = link.response.headers.get("Retry-After")
            return float(value) if value and value.isdigit() else None
    return None


def hub_api() -> Any:
    """The client for ``HF_ENDPOINT``: every wait bounded, every answer capped; exit 2 at once when offline."""
    check_token_file()
    return hf_api("this command")


def token_user(api: Any, retry: Retry) -> str:
    """The user the token belongs to; one-line errors for a missing or rejected token (never echoing it), and
    for an endpoint that does not answer (at once: this runs before any work)."""
    from huggingface_hub import get_token

    if not (api.token or get_token()):  # a token given to the client (--token), else the client's own chain
        raise HubkitError("no Hub token: set HF_TOKEN, run 'hf auth login', or use GitHub OIDC (HF_OIDC_RESOURCE)")

    def whoami() -> str:
        try:
            answer = api.whoami()
        except Exception as exc:
            fault = classify(exc)
            if fault is not None and fault.status in (401, 403):
                raise HubkitError("the Hub rejected the token; create a new write token and set HF_TOKEN") from None
            if fault is not None and not fault.transient:
                raise HubkitError(
                    f"the Hub at {redact(str(api.endpoint))} answered {fault.detail}; check HF_ENDPOINT"
                ) from None
            raise
        if not isinstance(answer, dict) or not isinstance(answer.get("name"), str):
            raise HubkitError(
                f"the Hub at {redact(str(api.endpoint))} answered whoami without a user name; check HF_ENDPOINT"
            )
        return str(answer["name"])

    return str(retry.call("checking the token", whoami, retry_unreachable=False))


def remote_files(api: Any, repo: str, revision: str) -> dict[str, Any] | None:
    """path -> RepoFile at ``revision``; None when the repo or the revision does not exist yet."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        return {f.path: f for f in list_tree(api, repo, revision) if hasattr(f, "size")}
    except (RepositoryNotFoundError, RevisionNotFoundError):
        return None


def same(local: LocalFile, remote: Any) -> bool:
    """The remote entry holds these bytes: same size and sha256 (LFS/Xet) or git blob sha1 (regular file)."""
    if remote is None or remote.size != local.size:
        return False
    if remote.lfs is not None:
        return bool(remote.lfs.sha256 == local.sha256)
    return local.git_sha1 is not None and remote.blob_id == local.git_sha1


# ------------------------------------------------------------------------------------------------ transport


def offers_xet(api: Any, repo: str, revision: str, create_pr: bool) -> bool:
    """Whether the endpoint hands out Xet write tokens for this upload, asked the way the client will ask.

    huggingface_hub 2.x uploads through Xet whenever hf_xet is installed, without asking the server, and a Hub
    without Xet answers the token route with 404 (which hf_xet retries for minutes). So hubkit asks first.
    """
    from huggingface_hub import get_session, hf_raise_for_status
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

    url = f"{api.endpoint}/api/models/{repo}/xet-write-token/{'None' if create_pr else quote(revision, safe='')}"
    response = get_session().get(url + ("?create_pr=1" if create_pr else ""), headers=build_hf_headers(token=api.token))
    if response.status_code in (404, 501):
        return False
    hf_raise_for_status(response)
    return True


class UploadAborted(Exception):
    """The push was interrupted: file reads for uploads in flight stop here."""


class AbortableFile(io.BufferedReader):
    """A file the client uploads from, whose reads fail once the push is interrupted, so no upload thread
    outlives the push. Being a buffered file object also makes huggingface_hub take its classic LFS path.

    Given the stat key the file had when it was hashed (and scanned), it uploads only that file as it was then:
    another file at the path (another inode) or any change to it since, seen when it is opened or after any
    read, raises FileChanged before the bytes read reach the client."""

    def __init__(self, path: Path, abort: threading.Event, key: StatKey | None = None) -> None:
        super().__init__(io.FileIO(path, "rb"))
        self._abort = abort
        self._key = key
        self._path = path
        try:
            self._check()
        except FileChanged:
            self.close()
            raise

    def _check(self) -> None:
        if self._key is not None and stat_key(os.fstat(self.fileno())) != self._key:
            raise FileChanged(f"{self._path.name} changed after hubkit hashed and scanned it")

    def read(self, size: int | None = -1) -> bytes:
        if self._abort.is_set():
            raise UploadAborted("the push was interrupted")
        data = super().read(size)
        self._check()
        return data

    def read1(self, size: int = -1) -> bytes:
        if self._abort.is_set():
            raise UploadAborted("the push was interrupted")
        data = super().read1(size)
        self._check()
        return data

    def readinto(self, buffer: Any) -> int:
        if self._abort.is_set():
            raise UploadAborted("the push was interrupted")
        count = super().readinto(buffer)
        self._check()
        return count


class _QuietLfsFallback(logging.Filter):
    """Drop the client's warning that buffered files go by LFS: hubkit chose that, for an endpoint without Xet."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Falling back to HTTP upload" not in record.getMessage()


logging.getLogger("huggingface_hub._commit_api").addFilter(_QuietLfsFallback())
