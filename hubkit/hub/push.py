"""``hubkit push``: upload a validated folder in bounded commits so that a rerun always converges, then verify.

Every file is hashed once per push (a cache keyed by path, size and mtime makes a rerun cheap) and the hash
serves both the upload and the verification. Only files that differ from the remote are uploaded; weights go
first and the card last, so a half-finished repo never shows a card that claims a complete release.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubkit.checkpoint.model import RECORD_DIR
from hubkit.errors import ExitCode, HubkitError, is_network_error
from hubkit.hub.options import PushOptions
from hubkit.progress import progress_bar

HASH_CACHE = f"{RECORD_DIR}/hashes.json"
SMALL_FILE = 10 * 1024 * 1024  # below this, files may be stored as plain git blobs: keep their git sha1 too
CARD = "README.md"
UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}


class PushRefused(HubkitError):
    """The folder itself is unfit to publish (exit 1, like a failed validation)."""

    exit_code = ExitCode.ARTIFACT_FAILED


@dataclass(frozen=True)
class LocalFile:
    path: str
    size: int
    sha256: str
    git_sha1: str | None


@dataclass(frozen=True)
class BatchLimit:
    files: int | None = None
    bytes: int | None = None

    @classmethod
    def parse(cls, text: str) -> BatchLimit:
        found = re.fullmatch(r"(\d+)\s*([KMGT]B)?", text.strip().upper())
        if not found or int(found[1]) <= 0:
            raise HubkitError(f"--batch {text!r} is not a file count (8) or a size (40GB)")
        return cls(bytes=int(found[1]) * UNITS[found[2]]) if found[2] else cls(files=int(found[1]))


@dataclass
class PushResult:
    repo: str
    revision: str
    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    remote_only: list[str] = field(default_factory=list)
    bytes_to_upload: int = 0
    commits: list[dict[str, Any]] = field(default_factory=list)
    pull_request: int | None = None
    merged: bool = False
    tag: str | None = None
    verified: bool | None = None
    mismatches: list[str] = field(default_factory=list)
    bytes_hashed: int = 0
    dry_run: bool = False

    @property
    def passed(self) -> bool:
        return not self.mismatches

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()} | {"passed": self.passed}


# ------------------------------------------------------------------------------------------------ local side


def select_files(folder: Path, include: tuple[str, ...], exclude: tuple[str, ...]) -> list[str]:
    """Files to publish: no hubkit records, no links out of the folder, no '..' anywhere."""
    root = folder.resolve()
    chosen = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        base = Path(dirpath)
        for name in [*dirnames, *filenames]:
            full = base / name
            relative = full.relative_to(folder).as_posix()
            if ".." in relative.split("/"):
                raise PushRefused(f"{relative} has '..' in its path; rename it before publishing")
            if full.is_symlink() and not full.resolve().is_relative_to(root):
                raise PushRefused(f"{relative} is a symlink to outside the folder; copy the file in instead")
        dirnames[:] = [d for d in dirnames if (base / d).relative_to(folder).as_posix() != RECORD_DIR]
        for name in filenames:
            relative = (base / name).relative_to(folder).as_posix()
            if include and not any(fnmatch.fnmatch(relative, g) for g in include):
                continue
            if any(fnmatch.fnmatch(relative, g) for g in exclude):
                continue
            chosen.append(relative)
    return sorted(chosen)


def hash_files(folder: Path, paths: list[str], workers: int, progress: bool) -> tuple[dict[str, LocalFile], int]:
    """sha256 (and the git blob sha1 of small files) of every file, in parallel; cached by path, size, mtime."""
    cache_path = folder / HASH_CACHE
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    found: dict[str, LocalFile] = {}
    todo = []
    for path in paths:
        stat = (folder / path).stat()
        hit = cache.get(path)
        if hit and hit[0] == stat.st_size and hit[1] == stat.st_mtime_ns:
            found[path] = LocalFile(path, stat.st_size, hit[2], hit[3])
        else:
            todo.append((path, stat))
    total = sum(stat.st_size for _, stat in todo)
    with progress_bar(total=total, desc="hash", unit="B", unit_scale=True, enabled=progress) as bar:

        def digest(item: tuple[str, os.stat_result]) -> LocalFile:
            path, stat = item
            sha256 = hashlib.sha256()
            sha1 = (
                hashlib.sha1(b"blob %d\0" % stat.st_size, usedforsecurity=False) if stat.st_size < SMALL_FILE else None
            )
            with open(folder / path, "rb") as handle:
                while chunk := handle.read(8 * 1024 * 1024):
                    sha256.update(chunk)
                    if sha1 is not None:
                        sha1.update(chunk)
                    bar.update(len(chunk))
            return LocalFile(path, stat.st_size, sha256.hexdigest(), sha1.hexdigest() if sha1 else None)

        with ThreadPoolExecutor(max(1, workers)) as pool:
            for result, (_, stat) in zip(pool.map(digest, todo), todo, strict=True):
                found[result.path] = result
                cache[result.path] = [result.size, stat.st_mtime_ns, result.sha256, result.git_sha1]
    if todo:
        cache_path.parent.mkdir(exist_ok=True)
        cache_path.write_text(json.dumps(cache))
    return found, total


def plan_batches(files: list[LocalFile], limit: BatchLimit) -> list[list[LocalFile]]:
    """Largest files first, small files after, the card alone and last."""
    card = [f for f in files if f.path == CARD]
    rest = sorted((f for f in files if f.path != CARD), key=lambda f: (f.size < SMALL_FILE, f.path))
    batches: list[list[LocalFile]] = []
    current: list[LocalFile] = []
    size = 0
    for item in rest:
        full = (limit.files is not None and len(current) >= limit.files) or (
            limit.bytes is not None and current and size + item.size > limit.bytes
        )
        if full:
            batches.append(current)
            current, size = [], 0
        current.append(item)
        size += item.size
    if current:
        batches.append(current)
    if card:
        batches.append(card)
    return batches


# ------------------------------------------------------------------------------------------------ remote side


def hub_api() -> Any:
    from huggingface_hub import HfApi

    return HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)


def check_token(api: Any, options: PushOptions) -> str:
    """The user the token belongs to; one-line errors for a missing or rejected token (never echoing it)."""
    from huggingface_hub import get_token
    from huggingface_hub.errors import HfHubHTTPError

    if not get_token():
        raise HubkitError("no Hub token: set HF_TOKEN, run 'hf auth login', or use GitHub OIDC (HF_OIDC_RESOURCE)")
    try:
        return str(_retrying(options, "checking the token", api.whoami, retry_network=False)["name"])
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            raise HubkitError("the Hub rejected the token; create a new write token and set HF_TOKEN") from None
        raise HubkitError(f"cannot reach the Hub at {api.endpoint} (HTTP {status}); check HF_ENDPOINT") from None
    except HubkitError:
        raise
    except Exception as exc:
        if not is_network_error(exc):
            raise
        raise HubkitError(f"cannot reach the Hub at {api.endpoint}: {exc}; check HF_ENDPOINT and the network") from None


def remote_files(api: Any, repo: str, revision: str) -> dict[str, Any] | None:
    """path -> RepoFile at ``revision``; None when the repo or the revision does not exist yet."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        return {f.path: f for f in api.list_repo_tree(repo, revision=revision, recursive=True) if hasattr(f, "size")}
    except (RepositoryNotFoundError, RevisionNotFoundError):
        return None


def same(local: LocalFile, remote: Any) -> bool:
    if remote is None or remote.size != local.size:
        return False
    if remote.lfs is not None:
        return bool(remote.lfs.sha256 == local.sha256)
    return local.git_sha1 is not None and remote.blob_id == local.git_sha1


def _retrying(
    options: PushOptions,
    what: str,
    call: Callable[[], Any],
    landed: Callable[[], bool] | None = None,
    retry_network: bool = True,
) -> Any:
    """Retry with backoff on 429/5xx and dropped connections, honouring Retry-After; a commit whose answer was
    lost is recognised on retry (its files are already there) instead of being made twice."""
    from huggingface_hub.errors import HfHubHTTPError

    delay = options.backoff_s
    for attempt in range(1, options.retries + 1):
        try:
            return call()
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status not in (408, 429, 500, 502, 503, 504):
                raise
            if attempt == options.retries:
                raise HubkitError(f"{what} failed: HTTP {status}: {str(exc).splitlines()[0][:200]}") from None
            retry_after = exc.response.headers.get("Retry-After") if exc.response is not None else None
            wait = float(retry_after) if retry_after and retry_after.isdigit() else delay
        except Exception as exc:
            if not is_network_error(exc) or not retry_network:
                raise
            if attempt == options.retries:
                raise HubkitError(f"{what} failed: {exc}; check HF_ENDPOINT and rerun the push to resume") from None
            wait = delay
        if landed is not None and landed():
            return None
        time.sleep(wait)
        delay = min(delay * 2, 60.0)
    raise AssertionError("unreachable")


def push(options: PushOptions) -> PushResult:
    """Plan, upload in bounded commits, verify; see the module docstring."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return _push(options)
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        raise HubkitError(f"the Hub refused the push (HTTP {status}): {str(exc).splitlines()[0][:200]}") from None


def _push(options: PushOptions) -> PushResult:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id  # type: ignore[attr-defined]

    try:
        validate_repo_id(options.repo)
    except HFValidationError as exc:
        raise HubkitError(f"--repo {options.repo!r} is not a valid repo id (ORG/NAME): {exc}") from None
    if not options.folder.is_dir():
        raise HubkitError(f"{options.folder} is not a folder; pass the checkpoint folder to publish")
    limit = BatchLimit.parse(options.batch)
    paths = select_files(options.folder, options.include, options.exclude)
    if not paths:
        raise HubkitError("no files to publish (check --include/--exclude)")
    if options.validate:
        _validate_before_push(options)
    api = hub_api()
    check_token(api, options)
    hashed, bytes_hashed = hash_files(options.folder, paths, options.workers, options.progress)
    base_revision = options.revision
    pr_num = _open_pull_request(api, options) if (options.atomic or options.create_pr) and not options.dry_run else None
    target = f"refs/pr/{pr_num}" if pr_num else base_revision
    remote = remote_files(api, options.repo, target) or {}
    result = PushResult(options.repo, target, bytes_hashed=bytes_hashed, dry_run=options.dry_run, pull_request=pr_num)
    pending = []
    for path in paths:
        local = hashed[path]
        if path not in remote:
            result.new.append(path)
            pending.append(local)
        elif not same(local, remote[path]):
            result.changed.append(path)
            pending.append(local)
        else:
            result.unchanged.append(path)
    result.remote_only = sorted(p for p in remote if p not in hashed and p != ".gitattributes")
    result.bytes_to_upload = sum(f.size for f in pending)
    batches = plan_batches(pending, limit)
    deletions = result.remote_only if options.delete_extra else []
    if options.dry_run:
        result.commits = [{"files": [f.path for f in b], "bytes": sum(f.size for f in b)} for b in batches]
        return result
    _ensure_repo_and_branch(api, options)
    if (options.atomic or options.create_pr) and pr_num is None and (batches or deletions):
        pr_num = _start_pull_request(api, options, batches.pop(0) if batches else [], deletions, result)
        deletions = []
        result.pull_request, target = pr_num, f"refs/pr/{pr_num}"
        result.revision = target
    for number, batch in enumerate(batches, 1):
        operations: list[Any] = []
        for item in batch:
            operation = CommitOperationAdd(path_in_repo=item.path, path_or_fileobj=str(options.folder / item.path))
            operation.upload_info.sha256 = bytes.fromhex(item.sha256)  # hashed once: reuse it
            operations.append(operation)
        if number == len(batches):
            operations += [CommitOperationDelete(path_in_repo=p) for p in deletions]
            deletions = []
        _commit(
            api,
            options,
            target,
            operations,
            batch,
            f"hubkit: upload {len(batch)} files ({number}/{len(batches)})",
            result,
        )
    if deletions:
        _commit(
            api,
            options,
            target,
            [CommitOperationDelete(path_in_repo=p) for p in deletions],
            [],
            "hubkit: delete remote-only files",
            result,
        )
    if options.verify:
        _verify(api, options, target, hashed, result)
    if options.atomic and pr_num is not None and result.passed:
        _retrying(options, "merging the pull request", lambda: api.merge_pull_request(options.repo, pr_num))
        result.merged = True
    if options.tag and result.passed:
        tag_target = base_revision if options.atomic or not pr_num else target
        _retrying(
            options,
            "tagging",
            lambda: api.create_tag(options.repo, tag=options.tag, revision=tag_target, exist_ok=True),
        )
        result.tag = options.tag
    return result


def _validate_before_push(options: PushOptions) -> None:
    from hubkit.validate.engine import Severity
    from hubkit.validate.options import ValidateOptions
    from hubkit.validate.runner import validate

    report = validate(str(options.folder), ValidateOptions(strict=options.strict, progress=False))
    errors = [
        f
        for f in report.findings
        if f.severity is Severity.ERROR or (options.strict and f.severity is Severity.WARNING)
    ]
    if errors:
        first = errors[0]
        raise PushRefused(
            f"validation failed ({len(errors)} findings, first {first.code} {first.file or ''}: {first.message}); "
            "run 'hubkit validate' for all, or push with --no-validate"
        )


def _ensure_repo_and_branch(api: Any, options: PushOptions) -> None:
    _retrying(
        options, "creating the repo", lambda: api.create_repo(options.repo, private=options.private, exist_ok=True)
    )
    if options.revision != "main":
        _retrying(
            options,
            "creating the branch",
            lambda: api.create_branch(options.repo, branch=options.revision, exist_ok=True),
        )


def _pull_request_title(options: PushOptions) -> str:
    return f"hubkit: release {options.folder.resolve().name} into {options.revision}"


def _open_pull_request(api: Any, options: PushOptions) -> int | None:
    """The open PR an earlier hubkit push of this release opened, to continue instead of opening a second."""
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        discussions = api.get_repo_discussions(options.repo, discussion_type="pull_request", discussion_status="open")
        for discussion in discussions:
            if discussion.title == _pull_request_title(options):
                return int(discussion.num)
    except RepositoryNotFoundError:
        return None
    return None


def _start_pull_request(
    api: Any, options: PushOptions, batch: list[LocalFile], deletions: list[str], result: PushResult
) -> int:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    operations: list[Any] = []
    for item in batch:
        operation = CommitOperationAdd(path_in_repo=item.path, path_or_fileobj=str(options.folder / item.path))
        operation.upload_info.sha256 = bytes.fromhex(item.sha256)
        operations.append(operation)
    operations += [CommitOperationDelete(path_in_repo=p) for p in deletions]
    info = _retrying(
        options,
        "opening the pull request",
        lambda: api.create_commit(
            options.repo,
            operations,
            commit_message=_pull_request_title(options),
            revision=options.revision,
            create_pr=True,
        ),
        landed=lambda: _open_pull_request(api, options) is not None,
    )
    number = int(info.pr_num) if info is not None else _open_pull_request(api, options)
    if number is None:
        raise HubkitError("the pull request could not be opened; rerun the push")
    result.commits.append({"files": [f.path for f in batch], "oid": getattr(info, "oid", None)})
    return number


def _commit(
    api: Any,
    options: PushOptions,
    target: str,
    operations: list[Any],
    batch: list[LocalFile],
    message: str,
    result: PushResult,
) -> None:
    def landed() -> bool:
        remote = remote_files(api, options.repo, target) or {}
        return all(same(item, remote.get(item.path)) for item in batch) and bool(batch)

    info = _retrying(
        options,
        f"commit '{message}'",
        lambda: api.create_commit(options.repo, operations, commit_message=message, revision=target),
        landed,
    )
    result.commits.append(
        {"files": [f.path for f in batch], "oid": getattr(info, "oid", None), "recovered": info is None}
    )


def _verify(api: Any, options: PushOptions, target: str, hashed: dict[str, LocalFile], result: PushResult) -> None:
    remote = remote_files(api, options.repo, target) or {}
    for path, local in sorted(hashed.items()):
        entry = remote.get(path)
        if entry is None:
            result.mismatches.append(f"{path}: missing on the remote")
        elif not same(local, entry):
            result.mismatches.append(f"{path}: remote size/hash differs from the local file")
    result.remote_only = sorted(p for p in remote if p not in hashed and p != ".gitattributes")
    result.verified = not result.mismatches


def describe(result: PushResult) -> Iterator[str]:
    """Human lines for a push result."""
    yield f"{'plan for' if result.dry_run else 'pushed to'} {result.repo}@{result.revision}"
    yield f"  new {len(result.new)}, changed {len(result.changed)}, unchanged {len(result.unchanged)}, remote-only {len(result.remote_only)}"
    yield f"  {result.bytes_to_upload:,} bytes to upload in {len(result.commits)} commits; {result.bytes_hashed:,} bytes hashed"
    for commit in result.commits:
        yield f"  commit: {len(commit['files'])} files {', '.join(commit['files'][:4])}{' …' if len(commit['files']) > 4 else ''}"
    if result.pull_request:
        yield f"  pull request #{result.pull_request}{' merged' if result.merged else ''}"
    if result.tag:
        yield f"  tag {result.tag}"
    for path in result.remote_only:
        yield f"  warning: {path} exists only on the remote (use --delete-extra to remove it)"
    for mismatch in result.mismatches:
        yield f"  error: {mismatch}"
    if result.verified is not None:
        yield (
            f"{'VERIFIED' if result.verified else 'VERIFY FAILED'}: every local file is on the remote with the same size and hash"
            if result.verified
            else "VERIFY FAILED"
        )
