"""The local side of a push: which files to publish, their hashes, and whether they are still the bytes hashed.

A file is identified by its stat key (size, mtime_ns, ctime_ns, inode, device), as git's index does: a user can
set mtime back with ``touch -r``, but any write or ``utime`` moves ctime to the filesystem's current time, which
no user can choose. A hash stays valid while the key is unchanged, except for a file whose last change fell in
the same filesystem clock tick as the hashing began ("racy", git's term): a later write in that tick could keep
the key, so such a file is hashed again when it matters and never cached.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
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
from hubkit.reads import read_bounded

HASH_CACHE = f"{RECORD_DIR}/hashes.json"
CLOCK_MARK = f"{RECORD_DIR}/hash-clock"  # written before hashing: its ctime is the filesystem's "now"
CACHE_VERSION = 2
SMALL_FILE = 10 * 1024 * 1024  # below this, files may be stored as plain git blobs: keep their git sha1 too
CHUNK = 8 * 1024 * 1024
READ_TRIES = 3
logger = logging.getLogger(__name__)

StatKey = tuple[int, int, int, int, int]


class PushRefused(HubkitError):
    """The folder itself is unfit to publish, or changed under the push (exit 1, like a failed validation)."""

    exit_code = ExitCode.ARTIFACT_FAILED


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
        chosen.append(relative)
    return sorted(chosen)


class HashCache:
    """``.hubkit/hashes.json``: path -> stat key and hashes. Read always; written only by pushes that write."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / HASH_CACHE
        self.entries: dict[str, list[object]] = {}
        try:
            data = json.loads(read_bounded(self.path, follow_links=False))
            if isinstance(data, dict) and data.get("version") == CACHE_VERSION:
                self.entries = dict(data["files"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # no cache, an older format or a damaged one: every file is hashed

    def get(self, path: str, key: StatKey) -> LocalFile | None:
        hit = self.entries.get(path)
        if not isinstance(hit, list) or len(hit) != 7 or tuple(hit[:5]) != key:
            return None
        return LocalFile(path, key[0], str(hit[5]), None if hit[6] is None else str(hit[6]), key)

    def put(self, item: LocalFile) -> None:
        self.entries[item.path] = [*item.key, item.sha256, item.git_sha1]

    def save(self) -> None:
        temporary = self.path.with_suffix(f".{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(exist_ok=True)
            temporary.write_text(json.dumps({"version": CACHE_VERSION, "files": self.entries}))
            temporary.replace(self.path)
        except OSError as exc:
            logger.warning("cannot write %s (%s): the next push hashes every file again", self.path, exc.strerror)


def filesystem_clock(folder: Path) -> int | None:
    """The folder's filesystem time now (ns), read from a mark hubkit writes: files changed at or after it are racy.
    None when the folder is read-only: then every file counts as racy (hashed again to verify, never cached)."""
    mark = folder / CLOCK_MARK
    try:
        mark.parent.mkdir(exist_ok=True)
        mark.write_text(f"{os.getpid()} {os.urandom(8).hex()}\n")  # new bytes: its ctime moves to "now"
        return mark.stat().st_ctime_ns
    except OSError as exc:
        logger.warning("cannot write %s (%s): every file is hashed again to verify it", mark, exc.strerror)
        return None


def is_racy(item: LocalFile, clock_ns: int | None) -> bool:
    """Changed in the tick the hashing began (or later): the stat key alone cannot prove it unchanged since."""
    return clock_ns is None or item.key[2] >= clock_ns


class Hasher:
    """Hashes files in parallel (sha256, plus the git blob sha1 of small files), stoppable between chunks."""

    def __init__(self, folder: Path, workers: int) -> None:
        self.folder = folder
        self.workers = max(1, workers)
        self.stop = threading.Event()
        self.bytes_hashed = 0
        self._lock = threading.Lock()

    def hash_one(self, path: str, bar: Bar | None = None) -> LocalFile:
        """The hashes of ``path`` as one consistent state: read again if it changed while being read."""
        for _ in range(READ_TRIES):
            try:
                with open(self.folder / path, "rb") as handle:
                    before = stat_key(os.fstat(handle.fileno()))
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
                        read += len(chunk)
                        if bar is not None:
                            bar.update(len(chunk))
                    after = stat_key(os.fstat(handle.fileno()))
            except OSError as exc:
                raise PushRefused(f"cannot read {path}: {exc.strerror}; fix it or --exclude it, then rerun") from None
            with self._lock:
                self.bytes_hashed += read
            if before == after and read == before[0]:
                return LocalFile(path, read, sha256.hexdigest(), sha1.hexdigest() if sha1 else None, before)
        raise PushRefused(f"{path} kept changing while hubkit read it; rerun the push once it is written")

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
    """Every file's hashes: from the cache where the stat key still matches, else read (and cached unless racy)."""
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
