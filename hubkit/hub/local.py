"""The local side of a push: which files to publish, their hashes, and whether they are still the bytes hashed.

Every byte that is hashed is also scanned for secrets in the same read (see ``hubkit.validate.secrets``): a file
holding a token or private key stops the push before anything is uploaded, whether or not it was validated.

A file is identified by its stat key (size, mtime_ns, ctime_ns, inode, device), as git's index does: a user can
set mtime back with ``touch -r``, but any write or ``utime`` moves ctime to the filesystem's current time, which
no user can choose. A hash stays valid while the key is unchanged, except for a file whose last change fell in
the same filesystem clock tick as the hashing began ("racy", git's term): a later write in that tick could keep
the key, so such a file is hashed again when it matters and never cached.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from hubkit.checkpoint.model import RECORD_DIR
from hubkit.checkpoint.source import list_folder
from hubkit.errors import ExitCode, HubkitError
from hubkit.progress import Bar, progress_bar
from hubkit.records import WriteFailed, load_record, record_folder, write_json, write_text
from hubkit.validate.secrets import SCANNER_VERSION, FileScan, Secret, name_secrets

HASH_CACHE = f"{RECORD_DIR}/hashes.json"
CLOCK_MARK = f"{RECORD_DIR}/hash-clock"  # written before hashing: its ctime is the filesystem's "now"
CACHE_VERSION = 3  # entries: stat key, sha256, git sha1, the version of the secret scan that found them clean
SMALL_FILE = 10 * 1024 * 1024  # below this, files may be stored as plain git blobs: keep their git sha1 too
CHUNK = 8 * 1024 * 1024
READ_TRIES = 3
logger = logging.getLogger(__name__)

StatKey = tuple[int, int, int, int, int]


class PushRefused(HubkitError):
    """The folder itself is unfit to publish, or changed under the push (exit 1, like a failed validation)."""

    exit_code = ExitCode.ARTIFACT_FAILED


class SecretFound(PushRefused):
    """A file to publish holds a secret: nothing of it is uploaded (exit 1); the secret itself is never shown."""

    def __init__(self, path: str, secrets: list[Secret]) -> None:
        more = f" (and {len(secrets) - 1} more)" if len(secrets) > 1 else ""
        super().__init__(f"{path}: {secrets[0].describe()}{more}; nothing of it was uploaded")
        self.path, self.secrets = path, secrets


@dataclass(frozen=True)
class LocalFile:
    path: str
    size: int
    sha256: str
    git_sha1: str | None
    key: StatKey


def stat_key(result: os.stat_result) -> StatKey:
    return (result.st_size, result.st_mtime_ns, result.st_ctime_ns, result.st_ino, result.st_dev)


def select_files(folder: Path, include: tuple[str, ...], exclude: tuple[str, ...]) -> list[str]:
    """Regular files to publish: no hubkit records, no links out of the folder, nothing that cannot be read.

    The folder is listed by the checkpoint model's own listing (which validate uses too), so both see the same
    files and the same faults; a symlink to a folder inside the folder is not followed, as git does not.
    """
    chosen = []
    for entry in list_folder(folder):
        relative = entry.path
        if relative == RECORD_DIR or relative.startswith(RECORD_DIR + "/"):
            continue
        if ".." in relative.split("/"):
            raise PushRefused(f"{relative} has '..' in its path; rename it before publishing")
        if entry.symlink_escapes:
            raise PushRefused(f"{relative} is a symlink to outside the folder; copy the file in instead")
        if entry.links_into(RECORD_DIR):
            raise PushRefused(
                f"{relative} is a symlink into {RECORD_DIR}/; delete it (hubkit's records are never published)"
            )
        if entry.is_dir and entry.problem:
            raise PushRefused(f"the folder {relative} {entry.problem}; fix its permissions or --exclude it")
        if include and not any(fnmatch.fnmatch(relative, g) for g in include):
            continue
        if any(fnmatch.fnmatch(relative, g) for g in exclude):
            continue
        if entry.problem:
            raise PushRefused(f"{relative} {entry.problem}; remove it, fix it or --exclude it")
        if entry.is_symlink and (folder / relative).is_dir():
            continue
        check_publishable(relative)
        chosen.append(relative)
    return sorted(chosen)


def check_publishable(relative: str) -> None:
    """Refuse (exit 2) a path the Hub does not accept (under ``.git/`` or ``.cache/``, not UTF-8), before any work.

    The client's own path check is asked (a delete operation is built and dropped: it checks and does nothing)."""
    from huggingface_hub import CommitOperationDelete

    try:
        relative.encode("utf-8")
        CommitOperationDelete(path_in_repo=relative)
    except (ValueError, UnicodeError) as exc:
        shown = relative.encode("utf-8", "backslashreplace").decode()
        raise HubkitError(f"the Hub refuses the path {shown}; --exclude it or move it out of the folder") from exc


class HashCache:
    """``.hubkit/hashes.json``: path -> stat key, hashes and the scan version that found the file clean. Read
    always; written only by pushes that write. A hit needs the same stat key and the current scan version."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / HASH_CACHE
        self.entries: dict[str, list[object]] = {}
        data = load_record(self.path)  # a link in its place, or a linked .hubkit, is refused (exit 2)
        files = data.get("files") if isinstance(data, dict) and data.get("version") == CACHE_VERSION else None
        if isinstance(files, dict):  # else no cache, an older format or a damaged one: every file is hashed
            self.entries = {path: hit for path, hit in files.items() if isinstance(hit, list)}

    def get(self, path: str, key: StatKey) -> LocalFile | None:
        hit = self.entries.get(path)
        if not isinstance(hit, list) or len(hit) != 8 or tuple(hit[:5]) != key or hit[7] != SCANNER_VERSION:
            return None
        sha256, sha1 = hit[5], hit[6]
        if not isinstance(sha256, str) or not (sha1 is None or isinstance(sha1, str)):
            return None  # a damaged entry: the file is hashed again
        return LocalFile(path, key[0], sha256, sha1, key)

    def put(self, item: LocalFile) -> None:
        self.entries[item.path] = [*item.key, item.sha256, item.git_sha1, SCANNER_VERSION]

    def save(self) -> None:
        """Best effort: a full disk or a read-only folder costs the next push its hashing; a link is refused."""
        try:
            record_folder(self.path.parent.parent)
            write_json(self.path, {"version": CACHE_VERSION, "files": self.entries}, indent=None)
        except WriteFailed as exc:
            logger.warning("%s: the next push hashes every file again", exc)


def filesystem_clock(folder: Path) -> int | None:
    """The folder's filesystem time now (ns), read from a mark hubkit writes: files changed at or after it are racy.
    None when the folder is read-only: then every file counts as racy (hashed again to verify, never cached)."""
    mark = folder / CLOCK_MARK
    try:
        record_folder(folder)
        write_text(mark, f"{os.getpid()} {os.urandom(8).hex()}\n")  # a new file: its ctime is "now"
        return os.stat(mark, follow_symlinks=False).st_ctime_ns
    except WriteFailed as exc:
        logger.warning("%s: every file is hashed again to verify it", exc)
    except OSError as exc:
        logger.warning("cannot read %s (%s): every file is hashed again to verify it", mark, exc.strerror)
    return None


def is_racy(item: LocalFile, clock_ns: int | None) -> bool:
    """Changed in the tick the hashing began (or later): the stat key alone cannot prove it unchanged since."""
    return clock_ns is None or item.key[2] >= clock_ns


class Hasher:
    """Hashes files in parallel (sha256, plus the git blob sha1 of small files), stoppable between chunks; each
    chunk read is also scanned for secrets, so that a file is hashed only as bytes found clean."""

    def __init__(self, folder: Path, workers: int) -> None:
        self.folder = folder
        self.workers = max(1, workers)
        self.stop = threading.Event()
        self.bytes_hashed = 0
        self._lock = threading.Lock()

    def hash_one(self, path: str, bar: Bar | None = None) -> LocalFile:
        """The hashes of ``path`` as one consistent state: read again if it changed while being read. Raises
        SecretFound when the bytes hold a secret."""
        for _ in range(READ_TRIES):
            try:
                with open(self._inside(path), "rb") as handle:
                    before = stat_key(os.fstat(handle.fileno()))
                    scan = FileScan(path, before[0])
                    sha256 = hashlib.sha256()
                    sha1 = (
                        hashlib.sha1(b"blob %d\0" % before[0], usedforsecurity=False)
                        if before[0] < SMALL_FILE
                        else None
                    )
                    read = 0
                    while chunk := handle.read(CHUNK):
                        if self.stop.is_set():
                            raise KeyboardInterrupt
                        sha256.update(chunk)
                        if sha1 is not None:
                            sha1.update(chunk)
                        scan.feed(chunk, read)
                        read += len(chunk)
                        if bar is not None:
                            bar.update(len(chunk))
                    after = stat_key(os.fstat(handle.fileno()))
            except OSError as exc:
                raise PushRefused(f"cannot read {path}: {exc.strerror}; fix it or --exclude it, then rerun") from None
            with self._lock:
                self.bytes_hashed += read
            if before == after and read == before[0]:
                secrets = scan.secrets()
                if secrets:
                    raise SecretFound(path, secrets)
                return LocalFile(path, read, sha256.hexdigest(), sha1.hexdigest() if sha1 else None, before)
        raise PushRefused(f"{path} kept changing while hubkit read it; rerun the push once it is written")

    def _inside(self, path: str) -> str:
        """``path`` resolved, refused unless it still leads to a file inside the folder and outside its records
        (a symlink may have been changed since the folder was listed)."""
        root = os.path.realpath(self.folder)
        real = os.path.realpath(self.folder / path)
        relative = os.path.relpath(real, root)
        if relative == ".." or relative.startswith(".." + os.sep) or relative.split(os.sep)[0] == RECORD_DIR:
            raise PushRefused(f"{path} now leads outside the folder or into {RECORD_DIR}/; fix it, then rerun")
        return real

    def hash_all(self, paths: list[str], progress: bool) -> dict[str, LocalFile]:
        sizes = {}
        for path in paths:
            try:
                sizes[path] = (self.folder / path).stat().st_size
            except OSError as exc:
                raise PushRefused(f"cannot read {path}: {exc.strerror}; fix it or --exclude it, then rerun") from None
        found: dict[str, LocalFile] = {}
        with progress_bar(total=sum(sizes.values()), desc="hash", unit="B", unit_scale=True, enabled=progress) as bar:
            pool = ThreadPoolExecutor(self.workers)
            try:
                for item in pool.map(lambda path: self.hash_one(path, bar), paths):
                    found[item.path] = item
            except BaseException:
                self.stop.set()  # running reads end at their next chunk; queued ones never start
                raise
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        return found


def hash_files(
    folder: Path, paths: list[str], hasher: Hasher, cache: HashCache, clock_ns: int | None, progress: bool
) -> dict[str, LocalFile]:
    """Every file's hashes: from the cache where the stat key still matches, else read (and cached unless racy).
    A file whose name or bytes hold a secret raises SecretFound before anything is uploaded."""
    for name, secret in name_secrets(paths):
        raise SecretFound(name, [secret])
    found: dict[str, LocalFile] = {}
    todo = []
    for path in paths:
        try:
            key = stat_key((folder / path).stat())
        except OSError as exc:
            raise PushRefused(f"cannot read {path}: {exc.strerror}; fix it or --exclude it, then rerun") from None
        hit = cache.get(path, key)
        if hit is not None:
            found[path] = hit
        else:
            todo.append(path)
    for item in hasher.hash_all(todo, progress).values():
        found[item.path] = item
        if not is_racy(item, clock_ns):
            cache.put(item)
    return found


def current_state(folder: Path, item: LocalFile, hasher: Hasher, clock_ns: int | None) -> LocalFile | None:
    """``item`` as the file is now: the same hashes if its stat key proves it unchanged, else hashed again;
    None if it is gone."""
    try:
        key = stat_key((folder / item.path).stat())
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PushRefused(f"cannot read {item.path}: {exc.strerror}; fix it, then rerun") from None
    if key == item.key and not is_racy(item, clock_ns):
        return item
    try:
        return hasher.hash_one(item.path)
    except PushRefused:
        if not (folder / item.path).exists():
            return None
        raise
