"""``hubkit push``: upload a validated folder in bounded commits so that a rerun always converges, then verify.

Every file is hashed once per push (a cache keyed by each file's stat key makes a rerun cheap, see
``hubkit.hub.local``) and the hash serves the plan, the upload and the verification. Only files that differ from
the remote are uploaded; weights go first and the card last, so a half-finished repo never shows a card that
claims a complete release. VERIFIED means: every file of the folder, as it is when the push ends (stat key
unchanged since it was hashed, else hashed again), is in the pushed commit with the same size and hash.

Validation cannot be bypassed: a push uploads only the bytes a passed validation read. The files are hashed first,
then validated, then proved unchanged (each file's hash as it is after the validation equals the one before); a
file that changes later, before or during its upload, stops the push instead of being uploaded (``NotValidated``,
exit 2). ``release`` hands over the content a passed validation recorded instead (``validated=``). Only
``--no-validate`` skips this, and the result then says NOT VALIDATED.

``--tag`` tags the pushed commit by one rule, release's tag stage's too (:func:`tag_commit`): a tag is never moved.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubkit.errors import HubkitError, redact
from hubkit.hub.local import (
    HashCache,
    Hasher,
    LocalFile,
    PushRefused,
    current_state,
    filesystem_clock,
    hash_files,
    is_racy,
    select_files,
    stat_key,
)
from hubkit.hub.options import PushOptions
from hubkit.hub.remote import (
    AbortableFile,
    FileChanged,
    PushIncomplete,
    Retry,
    hub_api,
    offers_xet,
    remote_files,
    same,
    token_user,
)
from hubkit.hub_ids import is_repo_id
from hubkit.output import Problem
from hubkit.progress import Bar, progress_bar, terminal_bars
from hubkit.reads import read_regular
from hubkit.sizes import human_size, size_or_none

__all__ = [
    "NotValidated",
    "PushOptions",
    "PushRefused",
    "PushResult",
    "Snapshot",
    "TagExists",
    "check_token",
    "content_of",
    "describe",
    "first_change",
    "first_difference",
    "head_commit",
    "hub_api",
    "push",
    "remote_files",
    "resolve_token",
    "tag_commit",
]

CARD = "README.md"
SMALL_FILE = 10 * 1024 * 1024


class BranchMoved(HubkitError):
    """The Hub refused a merge: the target branch moved since the pull request was opened."""


@dataclass(frozen=True)
class BatchLimit:
    files: int | None = None
    bytes: int | None = None

    @classmethod
    def parse(cls, text: str) -> BatchLimit:
        """A file count (``8``) or a size with its unit (``40GB``, ``40GiB``), as every size option takes it."""
        text = text.strip()
        count = int(text) if text.isascii() and text.isdigit() else None
        size = None if count is not None or not text.upper().endswith("B") else size_or_none(text)
        if not (count or size):
            raise HubkitError(f"--batch {text!r} is not a file count (8) or a size (40GB, 40GiB)")
        return cls(files=count) if count else cls(bytes=size)


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
    commit: str | None = None  # the commit the verification read (the revision's head after the uploads)
    commit_url: str | None = None
    xet_offered: bool | None = None  # the endpoint hands out Xet write tokens (else hubkit uploads by LFS)
    validated: bool = False  # the files pushed are the bytes a passed validation read (False: --no-validate)
    upload_seconds: float | None = None  # from the first commit to the last (None: a dry run)

    @property
    def passed(self) -> bool:
        return not self.mismatches

    @property
    def outcome(self) -> str:
        """One phrase: DRY RUN, VERIFIED, VERIFY FAILED or PUSHED, NOT VERIFIED; with ", NOT VALIDATED" after it
        when validation did not run for these files."""
        if self.dry_run:
            text = "DRY RUN"
        elif self.verified:
            text = "VERIFIED"
        elif self.verified is False:
            text = "VERIFY FAILED"
        else:
            text = "PUSHED, NOT VERIFIED"
        return text if self.validated else f"{text}, NOT VALIDATED"

    def as_dict(self) -> dict[str, Any]:
        # schema: schemas/push.schema.json
        return {"schema": 1} | self.__dict__ | {"passed": self.passed, "outcome": self.outcome}


class NotValidated(HubkitError):
    """The files differ from the bytes a passed validation read: nothing more is uploaded (exit 2)."""


def content_of(hashed: Mapping[str, LocalFile]) -> dict[str, str]:
    """The content fingerprint of a tree: each file's path and sha256."""
    return {path: item.sha256 for path, item in sorted(hashed.items())}


def first_difference(expected: Mapping[str, str], actual: Mapping[str, str]) -> str | None:
    """The first path whose content (or presence) differs between two content fingerprints, else None."""
    return next((p for p in sorted({*expected, *actual}) if expected.get(p) != actual.get(p)), None)


def check_repo_id(repo: str) -> None:
    """ORG/NAME, checked before anything is read or sent."""
    if not is_repo_id(repo):
        raise HubkitError(f"--repo {repo!r} is not a repo id of the form ORG/NAME (e.g. my-org/Kimi-K2-NVFP4)")


def plan_batches(files: list[LocalFile], limit: BatchLimit) -> list[list[LocalFile]]:
    """Largest files first, small files after, the card alone and last. A commit never holds two non-empty files
    with the same bytes: the client would upload that content once per file, at the same time, from one source
    (and corrupt it when the source is one open file); in a later commit the Hub already has the bytes."""
    card = [f for f in files if f.path == CARD]
    pending = sorted((f for f in files if f.path != CARD), key=lambda f: (f.size < SMALL_FILE, f.path))
    batches: list[list[LocalFile]] = []
    while pending:
        current: list[LocalFile] = []
        contents: set[str] = set()
        size = 0
        later = []
        for item in pending:
            full = (limit.files is not None and len(current) >= limit.files) or (
                limit.bytes is not None and current and size + item.size > limit.bytes
            )
            if full or (item.size and item.sha256 in contents):
                later.append(item)
                continue
            current.append(item)
            contents.add(item.sha256)
            size += item.size
        batches.append(current)
        pending = later
    if card:
        batches.append(card)
    return batches


def push(options: PushOptions, validated: Mapping[str, str] | None = None) -> PushResult:
    """Plan, upload in bounded commits, verify; see the module docstring. ``validated``: the content fingerprint
    (:func:`content_of`) a passed validation recorded; the files must still be exactly those, and are not
    validated again."""
    check_repo_id(options.repo)
    if not options.folder.is_dir():
        raise HubkitError(f"{options.folder} is not a folder; pass the checkpoint folder to publish")
    limit = BatchLimit.parse(options.batch)
    paths = select_files(options.folder, options.include, options.exclude)
    if not paths:
        raise HubkitError("no files to publish (check --include/--exclude)")
    token = resolve_token(options)
    with _scrubbed(token):
        return _Push(options, token).run(paths, limit, validated)


def resolve_token(options: PushOptions) -> str | None:
    """The token a push sends: ``--token``, else the variable ``--token-env`` names (unset or empty: exit 2 naming
    it), else None: the client's own chain (``HF_TOKEN``, the saved login)."""
    if options.token is not None:
        if not options.token.strip():
            raise HubkitError("--token is empty; pass a Hub write token, or leave --token out")
        return options.token
    if options.token_env:
        value = os.environ.get(options.token_env, "").strip()
        if not value:
            raise HubkitError(
                f"--token-env {options.token_env}: the environment variable {options.token_env} is unset or empty; "
                "set it to a Hub write token"
            )
        return value
    return None


@contextlib.contextmanager
def _scrubbed(token: str | None) -> Iterator[None]:
    """Any error leaving the push with ``token`` masked in its message (and in those of its causes)."""
    try:
        yield
    except BaseException as exc:
        link: BaseException | None = exc
        seen: set[int] = set()
        while token and link is not None and id(link) not in seen:
            seen.add(id(link))
            link.args = tuple(a.replace(token, "***") if isinstance(a, str) else a for a in link.args)
            link = link.__cause__ or link.__context__
        raise


def commit_message(options: PushOptions, files: int, number: int, of: int) -> str:
    """A commit's title: ``--commit-message`` or "hubkit: upload N files", naming the commit when there are
    several ("... (commit 2 of 5)")."""
    title = options.commit_message or f"hubkit: upload {plural(files, 'file')}"
    return title if of == 1 else f"{title} (commit {number} of {of})"


def plural(count: int, noun: str) -> str:
    """``1 file``, ``2 files``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def first_change(
    folder: Path,
    hashed: Mapping[str, LocalFile],
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    hasher: Hasher,
    clock_ns: int | None,
) -> str | None:
    """The first file that is not, now, the bytes in ``hashed`` (stat key unchanged, else hashed again), or that
    is new to the selection; None when the tree is exactly as hashed."""
    for path, item in sorted(hashed.items()):
        now = current_state(folder, item, hasher, clock_ns)
        if now is None or now.sha256 != item.sha256:
            return path
    return next((p for p in select_files(folder, include, exclude) if p not in hashed), None)


class Snapshot:
    """The files a push of ``folder`` would upload, hashed through the push's own cache (so a push after it hashes
    nothing again), and proof that they did not change since. ``write=False`` writes nothing (dry runs)."""

    def __init__(
        self, folder: Path, include: tuple[str, ...], exclude: tuple[str, ...], *, write: bool, progress: bool
    ) -> None:
        self.folder, self.include, self.exclude = folder, include, exclude
        self.hasher = Hasher(folder, workers=4)
        cache = HashCache(folder)
        self.clock_ns = filesystem_clock(folder) if write else None
        paths = select_files(folder, include, exclude)
        self.files = hash_files(folder, paths, self.hasher, cache, self.clock_ns, progress)
        if write:
            cache.save()

    @property
    def content(self) -> dict[str, str]:
        return content_of(self.files)

    def first_change(self) -> str | None:
        return first_change(self.folder, self.files, self.include, self.exclude, self.hasher, self.clock_ns)


def _validate_before_push(options: PushOptions) -> None:
    from hubkit.validate.engine import Severity
    from hubkit.validate.options import ValidateOptions
    from hubkit.validate.runner import validate

    report = validate(str(options.folder), ValidateOptions(strict=options.strict, progress=options.progress))
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


def _changed_after_validation(path: str) -> NotValidated:
    return NotValidated(
        f"{path} changed after it was validated and was not uploaded; rerun the push (it validates again)"
    )


class TagExists(HubkitError):
    """The tag already names another commit: a tag is never moved (exit 2)."""

    def __init__(self, tag: str, tagged: str | None, commit: str) -> None:
        super().__init__(
            f"tag {tag} already names commit {tagged or 'unknown'}, not {commit}, and a tag is never moved; "
            f"pick a new tag, or delete {tag} on the Hub first"
        )
        self.tag, self.tagged, self.commit = tag, tagged, commit


def head_commit(api: Any, retry: Retry, repo: str, revision: str) -> str:
    """The commit id ``revision`` (a branch, a tag or ``refs/pr/N``) names now."""
    return str(retry.call(f"reading the head of {revision}", lambda: api.model_info(repo, revision=revision).sha))


def tag_commit(api: Any, retry: Retry, repo: str, tag: str, commit: str) -> None:
    """Tag ``commit`` (a commit id) as ``tag``, or find it tagged so already. The one rule: a tag is never moved;
    one that names another commit is :class:`TagExists`."""

    def tagged() -> str | None:
        return next((t.target_commit for t in api.list_repo_refs(repo).tags if t.name == tag), None)

    retry.call(f"creating the tag {tag}", lambda: api.create_tag(repo, tag=tag, revision=commit, exist_ok=True))
    target = retry.call(f"reading the tag {tag}", tagged)
    if target != commit:
        raise TagExists(tag, target, commit)


def check_token(api: Any, options: PushOptions) -> str:
    """The user the token belongs to; a one-line exit 2 for a missing or rejected token or an endpoint that does
    not answer (release's preflight calls this before any work)."""
    return token_user(api, Retry(options.retries, options.backoff_s, str(api.endpoint)))


@contextlib.contextmanager
def _client_progress_bars(enabled: bool) -> Iterator[None]:
    """huggingface_hub's own upload bars follow hubkit's: off for machine output, quiet runs and non-terminals."""
    from huggingface_hub.utils.tqdm import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    if not enabled:
        disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


class _Push:
    """One push: the state shared by its steps."""

    def __init__(self, options: PushOptions, token: str | None) -> None:
        self.options = options
        self.folder = options.folder
        self.api = hub_api()
        if options.endpoint:
            self.api.endpoint = options.endpoint.rstrip("/")
        if token:
            self.api.token = token
        self.retry = Retry(options.retries, options.backoff_s, str(self.api.endpoint))
        self.hasher = Hasher(options.folder, options.workers)
        self.cache = HashCache(options.folder)
        self.clock_ns: int | None = None
        self.hashed: dict[str, LocalFile] = {}
        self.abort = threading.Event()
        self.xet: bool | None = None
        self.validated = False  # self.hashed holds the bytes a passed validation read: they alone may be uploaded
        self.upload_bar = contextlib.ExitStack()  # holds the upload bar from the first commit to the last
        self.upload: Bar | None = None
        self.files_uploaded = self.files_to_upload = 0

    # ------------------------------------------------------------------------------------------ steps

    def run(self, paths: list[str], limit: BatchLimit, validated: Mapping[str, str] | None) -> PushResult:
        with _client_progress_bars(self.options.progress and terminal_bars()), self.upload_bar:
            return self._run(paths, limit, validated)

    def _run(self, paths: list[str], limit: BatchLimit, validated: Mapping[str, str] | None) -> PushResult:
        options, api = self.options, self.api
        if validated is None and not options.validate:
            token_user(api, self.retry)  # nothing to validate: a rejected token is said before the hashing
        if not options.dry_run:
            self.clock_ns = filesystem_clock(self.folder)
        self.hashed = hash_files(self.folder, paths, self.hasher, self.cache, self.clock_ns, options.progress)
        if not options.dry_run:
            self.cache.save()
        if validated is not None:
            changed = first_difference(validated, content_of(self.hashed))
            if changed is not None:
                raise NotValidated(
                    f"{changed} differs from what the last passed validation read; validate the folder again, then push"
                )
            self.validated = True
        elif options.validate:
            _validate_before_push(options)
            changed = self._first_change()
            if changed is not None:
                raise NotValidated(f"{changed} changed while it was validated; rerun the push once it is written")
            self.validated = True
        if validated is not None or options.validate:
            token_user(api, self.retry)
        if not options.dry_run:  # first, so that a new branch is planned against what it starts from
            self._ensure_repo_and_branch()
        pr_num = self._open_pull_request() if (options.atomic or options.create_pr) and not options.dry_run else None
        target = f"refs/pr/{pr_num}" if pr_num else options.revision
        remote = self.retry.call("listing the remote files", lambda: remote_files(api, options.repo, target)) or {}
        result = PushResult(
            options.repo, target, dry_run=options.dry_run, pull_request=pr_num, validated=self.validated
        )
        pending = []
        for path in paths:
            local = self.hashed[path]
            if path not in remote:
                result.new.append(path)
                pending.append(local)
            elif not same(local, remote[path]):
                result.changed.append(path)
                pending.append(local)
            else:
                result.unchanged.append(path)
        result.remote_only = sorted(p for p in remote if p not in self.hashed and p != ".gitattributes")
        result.bytes_to_upload = sum(f.size for f in pending)
        batches = plan_batches(pending, limit)
        deletions = result.remote_only if options.delete_extra else []
        if options.dry_run:
            result.commits = [{"files": [f.path for f in b], "bytes": sum(f.size for f in b)} for b in batches]
            result.bytes_hashed = self.hasher.bytes_hashed
            return result
        self._start_upload_bar(result.bytes_to_upload, len(pending))
        started = time.monotonic()
        if (options.atomic or options.create_pr) and pr_num is None and (batches or deletions):
            pr_num = self._start_pull_request(batches.pop(0) if batches else [], deletions, result)
            deletions = []
            result.pull_request, target = pr_num, f"refs/pr/{pr_num}"
            result.revision = target
        for number, batch in enumerate(batches, 1):
            last = number == len(batches)
            message = commit_message(options, len(batch), number, len(batches))
            self._commit(target, batch, deletions if last else [], message, result)
            deletions = [] if last else deletions
        if deletions:
            self._commit(target, [], deletions, options.commit_message or "hubkit: delete remote-only files", result)
        result.upload_seconds = round(time.monotonic() - started, 3)
        self.upload_bar.close()
        result.xet_offered = self.xet
        if options.verify:
            self._verify(target, result)
        else:
            self._read_head(target, result)
        self.cache.save()
        result.bytes_hashed = self.hasher.bytes_hashed
        if options.atomic and pr_num is not None and result.passed:
            self._merge(pr_num)
            result.merged = True
        if options.tag and result.passed:
            pushed = result.commit
            if result.merged or pushed is None:  # the branch's head after the merge
                pushed = head_commit(api, self.retry, options.repo, options.revision)
            tag_commit(api, self.retry, options.repo, options.tag, pushed)
            result.tag = options.tag
        return result

    def _merge(self, number: int) -> None:
        """Merge the pull request. The Hub refuses when the branch moved since it was opened (another push landed
        there): hubkit then closes it, so that a rerun opens a fresh one on top of that push instead of undoing it."""
        from huggingface_hub.errors import HfHubHTTPError

        repo, branch = self.options.repo, self.options.revision

        def merge() -> None:
            try:
                self.api.merge_pull_request(repo, number)
            except HfHubHTTPError as exc:
                if exc.response is not None and exc.response.status_code in (409, 412):
                    raise BranchMoved(branch) from None
                raise

        try:
            self.retry.call("merging the pull request", merge)
        except BranchMoved:
            comment = f"Closed by hubkit: {branch} moved since this pull request was opened; a rerun opens a new one."
            self.retry.call(
                "closing the pull request",
                lambda: self.api.change_discussion_status(repo, number, "closed", comment=comment),
            )
            raise PushIncomplete(
                f"{branch} moved while pull request #{number} was open (another push landed there); hubkit closed "
                f"it rather than undo that push: rerun the push to release on top of the new {branch}"
            ) from None

    def _ensure_repo_and_branch(self) -> None:
        options, api = self.options, self.api
        self.retry.call(
            "creating the repo", lambda: api.create_repo(options.repo, private=options.private, exist_ok=True)
        )
        if options.revision != "main":
            self.retry.call(
                "creating the branch",
                lambda: api.create_branch(options.repo, branch=options.revision, exist_ok=True),
            )

    def _pull_request_title(self) -> str:
        return f"hubkit: release {self.folder.resolve().name} into {self.options.revision}"

    def _open_pull_request(self) -> int | None:
        """The open PR an earlier hubkit push of this release opened, to continue instead of opening a second."""
        from huggingface_hub.errors import RepositoryNotFoundError

        def find() -> int | None:
            try:
                discussions = self.api.get_repo_discussions(
                    self.options.repo, discussion_type="pull_request", discussion_status="open"
                )
                for discussion in discussions:
                    if discussion.title == self._pull_request_title():
                        return int(discussion.num)
            except RepositoryNotFoundError:
                return None
            return None

        found: int | None = self.retry.call("looking for the open pull request", find)
        return found

    def _start_pull_request(self, batch: list[LocalFile], deletions: list[str], result: PushResult) -> int:
        info = self._commit(
            self.options.revision,
            batch,
            deletions,
            self._pull_request_title(),
            result,
            create_pr=True,
            landed=lambda: self._open_pull_request() is not None,
        )
        number = int(info.pr_num) if info is not None and info.pr_num is not None else self._open_pull_request()
        if number is None:
            raise HubkitError("the pull request could not be opened; rerun the push")
        return number

    # ------------------------------------------------------------------------------------------ commits

    def _commit(
        self,
        target: str,
        batch: list[LocalFile],
        deletions: list[str],
        message: str,
        result: PushResult,
        create_pr: bool = False,
        landed: Any = None,
    ) -> Any:
        """One commit of ``batch`` (and ``deletions``), retried on transient faults. Files that changed since they
        were hashed are hashed again before each try, so a try uploads them as they are then."""
        from huggingface_hub import CommitOperationDelete

        options, api = self.options, self.api
        if self.xet is None and batch:
            self.xet = self.retry.call(
                "asking the Hub for Xet", lambda: offers_xet(api, options.repo, target, create_pr)
            )
        self._refresh(batch)

        def attempt() -> Any:
            operations, files = self._additions(batch)
            operations += [CommitOperationDelete(path_in_repo=p) for p in deletions]
            try:
                return self._interruptible(
                    lambda: api.create_commit(
                        options.repo,
                        operations,
                        commit_message=message,
                        revision=target,
                        create_pr=create_pr,
                        commit_description=options.commit_description,
                    )
                )
            except Exception as exc:
                changed = self._changed(batch)
                if changed:  # whatever the server said (a hash mismatch, most likely), this is why
                    raise FileChanged(f"{changed[0]} changed during its upload") from exc
                raise
            finally:
                for handle in files:
                    handle.close()

        def landed_batch() -> bool:
            remote = remote_files(api, options.repo, target) or {}
            return bool(batch) and all(same(item, remote.get(item.path)) for item in batch)

        info = self.retry.call(
            f"commit '{message}'",
            attempt,
            landed=landed or (landed_batch if batch else None),
            before_retry=lambda: self._refresh(batch),
        )
        result.commits.append(
            {"files": [f.path for f in batch], "oid": getattr(info, "oid", None), "recovered": info is None}
        )
        self._uploaded(batch)
        return info

    def _start_upload_bar(self, size: int, files: int) -> None:
        bar = progress_bar(
            total=size, desc="upload", unit="B", unit_scale=True, enabled=self.options.progress, each=True
        )
        self.upload = self.upload_bar.enter_context(bar)
        self.files_to_upload = files
        self.upload.set_postfix_str(f"0/{files} files")

    def _uploaded(self, batch: list[LocalFile]) -> None:
        """A commit landed: its files and bytes on the upload bar (a heartbeat line per commit)."""
        if self.upload is not None and batch:
            self.files_uploaded += len(batch)
            self.upload.set_postfix_str(f"{self.files_uploaded}/{self.files_to_upload} files")
            self.upload.update(sum(item.size for item in batch))

    def _additions(self, batch: list[LocalFile]) -> tuple[list[Any], list[AbortableFile]]:
        from huggingface_hub import CommitOperationAdd

        operations: list[Any] = []
        files: list[AbortableFile] = []
        try:
            for item in batch:
                if self.validated and item.size < SMALL_FILE:
                    data = self._validated_bytes(item)  # a buffer, like AbortableFile, keeps the client off Xet
                    operations.append(CommitOperationAdd(item.path, data if self.xet else io.BytesIO(data)))
                    continue
                operation = CommitOperationAdd(path_in_repo=item.path, path_or_fileobj=str(self.folder / item.path))
                operation.upload_info.sha256 = bytes.fromhex(item.sha256)  # hashed once: reused
                if not self.xet:
                    # A file object makes the client upload by classic LFS (see offers_xet); opened after the client
                    # read the file's size and sample from the path, so nothing is hashed twice. It uploads only
                    # the file hashed and scanned, unchanged (its stat key), else raises FileChanged.
                    handle = AbortableFile(self.folder / item.path, self.abort, item.key)
                    files.append(handle)
                    operation.path_or_fileobj = handle
                operations.append(operation)
        except BaseException:
            for handle in files:
                handle.close()
            raise
        return operations, files

    def _validated_bytes(self, item: LocalFile) -> bytes:
        """A small file's bytes, uploaded from memory once proved to be the validated ones: no later write reaches
        the Hub (large files go by LFS or Xet, whose uploads the Hub checks against the validated sha256)."""
        data = read_regular(self.folder / item.path, limit=SMALL_FILE, what="the file")
        if hashlib.sha256(data).hexdigest() != item.sha256:
            raise _changed_after_validation(item.path)
        return data

    def _interruptible(self, call: Any) -> Any:
        """Run a commit so that an interrupt (SIGINT, or SIGTERM mapped to it) stops its LFS uploads at their next
        read and returns only once no upload thread is left. (The client aborts its own Xet uploads.)"""
        if self.xet:
            return call()
        pool = ThreadPoolExecutor(1, thread_name_prefix="hubkit-commit")
        try:
            return pool.submit(call).result()
        except KeyboardInterrupt:
            self.abort.set()
            raise
        finally:
            pool.shutdown(wait=True)

    def _changed(self, batch: list[LocalFile]) -> list[str]:
        changed = []
        for item in batch:
            try:
                if stat_key((self.folder / item.path).stat()) != item.key:
                    changed.append(item.path)
            except OSError:
                changed.append(item.path)
        return changed

    def _refresh(self, batch: list[LocalFile]) -> None:
        """Files that changed since they were hashed, as they are now; a validated push refuses other bytes."""
        for index, item in enumerate(batch):
            now = current_state(self.folder, item, self.hasher, self.clock_ns) if self._changed([item]) else item
            if now is None:
                raise PushRefused(f"{item.path} was removed during the push; rerun the push")
            if self.validated and now.sha256 != item.sha256:
                raise _changed_after_validation(item.path)
            batch[index] = self.hashed[item.path] = now

    def _first_change(self) -> str | None:
        options = self.options
        return first_change(self.folder, self.hashed, options.include, options.exclude, self.hasher, self.clock_ns)

    # ------------------------------------------------------------------------------------------ verify

    def _read_head(self, target: str, result: PushResult) -> str:
        options, api = self.options, self.api
        sha = str(
            self.retry.call("reading the pushed commit", lambda: api.model_info(options.repo, revision=target).sha)
        )
        result.commit, result.commit_url = sha, f"{redact(str(api.endpoint)).rstrip('/')}/{options.repo}/commit/{sha}"
        return sha

    def _verify(self, target: str, result: PushResult) -> None:
        """Every file as it is now (stat key unchanged since hashing, else hashed again) against the pushed commit."""
        options, api = self.options, self.api
        sha = self._read_head(target, result)
        remote = self.retry.call("listing the pushed files", lambda: remote_files(api, options.repo, sha)) or {}
        for path, uploaded in sorted(self.hashed.items()):
            now = current_state(self.folder, uploaded, self.hasher, self.clock_ns)
            if now is None:
                result.mismatches.append(f"{path}: removed from the folder during the push; rerun the push")
                continue
            if now is not uploaded and not is_racy(now, self.clock_ns):
                self.cache.put(now)
            if same(now, remote.get(path)):
                continue
            if now.sha256 != uploaded.sha256:
                result.mismatches.append(f"{path}: changed during the push; rerun the push to upload it")
            elif path not in remote:
                result.mismatches.append(f"{path}: missing on the remote")
            else:
                result.mismatches.append(f"{path}: the remote holds other bytes (size or hash differs)")
        for path in sorted(set(select_files(self.folder, options.include, options.exclude)) - set(self.hashed)):
            result.mismatches.append(f"{path}: appeared in the folder during the push; rerun the push to upload it")
        result.remote_only = sorted(p for p in remote if p not in self.hashed and p != ".gitattributes")
        result.verified = not result.mismatches


# ------------------------------------------------------------------------------------------------ reporting


def describe(result: PushResult) -> Iterator[str | Problem]:
    """Human lines for a push result, and its warnings and errors as problems (text or annotations)."""
    yield f"{'plan for' if result.dry_run else 'pushed to'} {result.repo}@{result.revision}"
    yield f"  new {len(result.new)}, changed {len(result.changed)}, unchanged {len(result.unchanged)}, remote-only {len(result.remote_only)}"
    yield f"  {uploaded(result)}; {human_size(result.bytes_hashed)} hashed"
    for commit in result.commits:
        yield f"  commit: {plural(len(commit['files']), 'file')} {', '.join(commit['files'][:4])}{' …' if len(commit['files']) > 4 else ''}"
    if result.commit_url:
        yield f"  head: {result.commit_url}"
    if result.pull_request:
        yield f"  pull request #{result.pull_request}{' merged' if result.merged else ''}"
    if result.tag:
        yield f"  tag {result.tag}"
    for path in result.remote_only:
        yield Problem(f"{path} exists only on the remote (use --delete-extra to remove it)", severity="warning")
    for mismatch in result.mismatches:
        yield Problem(mismatch)
    if result.verified:
        yield (
            f"VERIFIED: all {len(result.new) + len(result.changed) + len(result.unchanged)} files, as they are now, "
            f"are in commit {(result.commit or '')[:12]} with the same size and hash"
        )
    elif result.verified is False:
        yield f"VERIFY FAILED: {len(result.mismatches)} files differ; rerun the push to upload what changed"
    if not result.validated:
        yield Problem(
            "NOT VALIDATED (--no-validate): run 'hubkit validate' on the folder before relying on these files",
            severity="warning",
        )


def uploaded(result: PushResult) -> str:
    """What the push uploaded, in human units with its throughput: "790.0 kB in 1 commit, 1.2 MB/s"."""
    return upload_text(result.bytes_to_upload, len(result.commits), result.upload_seconds, planned=result.dry_run)


def upload_text(size: int, commits: int, seconds: float | None, planned: bool = False) -> str:
    """``size`` bytes in ``commits`` commits over ``seconds``: "790.0 kB in 1 commit, 1.2 MB/s"; "nothing to
    upload" when there was nothing; a plan says "to upload" and no rate."""
    if not size and not commits:
        return "nothing to upload"
    text = f"{human_size(size)} {'to upload ' if planned else ''}in {plural(commits, 'commit')}"
    return f"{text}, {human_size(size / seconds)}/s" if seconds and not planned else text


def step_summary(result: PushResult | None, failure: str | None = None) -> str:
    """Markdown for GitHub's job summary (``$GITHUB_STEP_SUMMARY``)."""
    if result is None:
        return f"### hubkit push failed\n\n{failure}\n"
    mark = "" if result.dry_run or result.verified is None else "✅ " if result.verified else "❌ "
    outcome = mark + result.outcome.replace("NOT VALIDATED", "⚠️ NOT VALIDATED (--no-validate)")
    rows = [
        ("Outcome", outcome),
        ("Repo", f"`{result.repo}` @ `{result.revision}`"),
        ("Commit", f"[{(result.commit or '')[:12]}]({result.commit_url})" if result.commit_url else "none"),
        ("Files", f"{len(result.new)} new, {len(result.changed)} changed, {len(result.unchanged)} unchanged"),
        ("Remote-only", str(len(result.remote_only))),
        ("Uploaded", uploaded(result)),
    ]
    if result.pull_request:
        rows.append(("Pull request", f"#{result.pull_request}{' (merged)' if result.merged else ''}"))
    if result.tag:
        rows.append(("Tag", f"`{result.tag}`"))
    lines = [f"### hubkit push: {outcome}", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    lines += ["", *(f"- {m}" for m in result.mismatches)] if result.mismatches else []
    return "\n".join(lines) + "\n"
