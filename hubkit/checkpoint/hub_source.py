"""A Hub repo as a checkpoint source: the file list, and byte ranges (safetensors headers, small configs)
through huggingface_hub's filesystem, never the tensor data unless asked for its exact ranges."""

from __future__ import annotations

import os
from pathlib import Path

from hubkit.checkpoint.source import HUB_SCHEME, FileEntry
from hubkit.errors import HubkitError, is_network_error
from hubkit.reads import check_token_file


def parse_hub_ref(ref: str) -> tuple[str, str | None]:
    """``hf://ORG/NAME[@REV]`` -> (repo id, revision or None); anything else is a one-line HubkitError."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id  # type: ignore[attr-defined]  # public, not re-exported

    body = ref.removeprefix(HUB_SCHEME)
    repo, at, revision = body.partition("@")
    usage = f"{ref} is not hf://ORG/NAME[@REVISION]"
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise HubkitError(usage)
    if at and not revision.strip():
        raise HubkitError(f"{usage}: the revision after '@' is empty")
    try:
        validate_repo_id(repo)  # the Hub's own rule for names: letters, digits, '-', '_', '.', no '..'
    except HFValidationError:
        raise HubkitError(
            f"{usage}: '{repo}' is not a Hub repo id (letters, digits, '-', '_' and '.'; no '..')"
        ) from None
    return repo, revision or None


def _lfs_sha256(info: dict[str, object]) -> str | None:
    """The sha256 the Hub lists for an LFS (or Xet) file; None for a file stored in git."""
    lfs = info.get("lfs")
    sha = lfs.get("sha256") if isinstance(lfs, dict) else None
    return sha if isinstance(sha, str) else None


class HubSource:
    """A Hub repo at one commit, read by range requests."""

    def __init__(self, ref: str) -> None:
        from huggingface_hub import HfApi, HfFileSystem
        from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

        self.repo, revision = parse_hub_ref(ref)
        check_token_file()
        endpoint = os.environ.get("HF_ENDPOINT") or None
        api = HfApi(endpoint=endpoint)
        try:
            self.commit = str(api.model_info(self.repo, revision=revision).sha)
        except RepositoryNotFoundError:
            raise HubkitError(f"{ref}: repository not found (or private: set HF_TOKEN)") from None
        except RevisionNotFoundError:
            raise HubkitError(f"{ref}: revision {revision} not found") from None
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            raise HubkitError(f"{ref}: the Hub answered HTTP {status}; check HF_TOKEN and HF_ENDPOINT") from None
        except Exception as exc:
            if not is_network_error(exc):
                raise
            raise HubkitError(f"{ref}: cannot reach the Hub ({exc}); check HF_ENDPOINT and the network") from None
        self.ref = ref
        self.fs = HfFileSystem(endpoint=endpoint)
        self.prefix = f"{self.repo}@{self.commit}"

    @property
    def location(self) -> str:
        return self.ref

    def list_files(self) -> list[FileEntry]:
        found = self.fs.find(self.prefix, detail=True)  # also fills the filesystem's cache
        assert isinstance(found, dict)
        start = len(self.prefix) + 1
        return sorted(
            (FileEntry(name[start:], int(info["size"]), sha256=_lfs_sha256(info)) for name, info in found.items()),
            key=lambda e: e.path,
        )

    def read_range(self, path: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        try:
            with self.fs.open(f"{self.prefix}/{path}", "rb", block_size=length, cache_type="none") as handle:
                handle.seek(start)
                data: bytes = handle.read(length)
        except (ConnectionError, TimeoutError) as exc:
            raise HubkitError(f"{self.ref}: lost the Hub while reading {path} ({exc}); rerun") from None
        except Exception as exc:
            if isinstance(exc, OSError) or not is_network_error(exc):
                raise  # an OSError about the file itself is the caller's to report
            raise HubkitError(f"{self.ref}: lost the Hub while reading {path} ({exc}); rerun") from None
        return data

    def local_path(self, path: str) -> Path | None:
        return None
