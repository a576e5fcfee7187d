"""A Hub repo as a checkpoint source: the file list, and byte ranges (safetensors headers, small configs) by
Range requests, never the tensor data unless asked for its exact ranges."""

from __future__ import annotations

import json
import re
from pathlib import Path

from hubkit.checkpoint.hub_client import hf_api, list_tree, read_range
from hubkit.checkpoint.source import HUB_SCHEME, FileEntry
from hubkit.errors import HubkitError, is_network_error, redact
from hubkit.hub_ids import is_repo_id
from hubkit.reads import check_token_file


def parse_hub_ref(ref: str) -> tuple[str, str | None]:
    """``hf://ORG/NAME[@REV]`` -> (repo id, revision or None); anything else is a one-line HubkitError."""
    body = ref.removeprefix(HUB_SCHEME)
    repo, at, revision = body.partition("@")
    usage = f"{ref} is not hf://ORG/NAME[@REVISION]"
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise HubkitError(usage)
    if at and not revision.strip():
        raise HubkitError(f"{usage}: the revision after '@' is empty")
    if not is_repo_id(repo):
        raise HubkitError(f"{usage}: '{repo}' is not a Hub repo id (letters, digits, '-', '_' and '.'; no '..')")
    return repo, revision or None


def _lfs_sha256(entry: object) -> str | None:
    """The sha256 the Hub lists for an LFS (or Xet) file; None for a file stored in git."""
    lfs = getattr(entry, "lfs", None)
    sha = lfs.get("sha256") if isinstance(lfs, dict) else None
    return sha if isinstance(sha, str) else None


class HubSource:
    """A Hub repo at one commit, read by range requests (each wait and each answer bounded, see hub_client)."""

    def __init__(self, ref: str) -> None:
        from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

        self.repo, revision = parse_hub_ref(ref)
        check_token_file()
        self.ref = ref
        self.api = hf_api(f"reading {ref}")
        try:
            sha = self.api.model_info(self.repo, revision=revision).sha
        except RepositoryNotFoundError:
            raise HubkitError(f"{ref}: repository not found (or private: set HF_TOKEN)") from None
        except RevisionNotFoundError:
            raise HubkitError(f"{ref}: revision {revision} not found") from None
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            raise HubkitError(f"{ref}: the Hub answered HTTP {status}; check HF_TOKEN and HF_ENDPOINT") from None
        except HubkitError:
            raise
        except Exception as exc:
            raise self._lost(exc, "cannot reach the Hub") from None
        if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{40}", sha):
            raise HubkitError(f"{ref}: the Hub named no commit for it (sha {str(sha)[:50]!r}); check HF_ENDPOINT")
        self.commit = sha

    @property
    def location(self) -> str:
        return self.ref

    def _lost(self, exc: Exception, what: str) -> Exception:
        """A network fault or an error answer as a one-line HubkitError; anything else (a bug) as it is."""
        from huggingface_hub.errors import HfHubHTTPError

        if isinstance(exc, json.JSONDecodeError):
            return HubkitError(f"{self.ref}: the Hub's answer is not JSON; check HF_ENDPOINT")
        if not is_network_error(exc) and not isinstance(exc, HfHubHTTPError):
            return exc
        detail = redact(str(exc).splitlines()[0]) if str(exc) else type(exc).__name__
        return HubkitError(f"{self.ref}: {what} ({detail}); check HF_ENDPOINT and the network, then rerun")

    def list_files(self) -> list[FileEntry]:
        try:
            entries = [FileEntry(e.path, int(e.size), sha256=_lfs_sha256(e)) for e in list_tree(self.api, self.repo, self.commit)
                       if hasattr(e, "size")]  # fmt: skip
        except HubkitError:
            raise
        except Exception as exc:
            raise self._lost(exc, "lost the Hub while listing the files") from None
        return sorted(entries, key=lambda e: e.path)

    def read_range(self, path: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        try:
            return read_range(self.api, self.repo, path, self.commit, start, length)
        except (HubkitError, FileNotFoundError):
            raise  # a file the Hub does not have is the caller's to report
        except Exception as exc:
            raise self._lost(exc, f"lost the Hub while reading {path}") from None

    def local_path(self, path: str) -> Path | None:
        return None
