"""The push stage: the content of the last passed validation uploaded and verified (the export is validated first
when it differs from that content), and the card diff against the previous release."""

from __future__ import annotations

import contextlib
import difflib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from hubkit.release.stages.base import Stage, StageResult, card_text, fingerprint, folder_fingerprint
from hubkit.release.stages.validate import content, export_snapshot, validated_content

if TYPE_CHECKING:
    from hubkit.hub.options import PushOptions
    from hubkit.manifest import Manifest

#: The most of the previous release's card read for the card diff.
CARD_LIMIT = 16 * 1024**2


class Push(Stage):
    name = "push"

    def fingerprint(self) -> str:
        release = self.manifest.release
        return fingerprint(folder_fingerprint(self.out), content(self.release), release.model_dump(),
                           self.manifest.push.model_dump(), release.endpoint or os.environ.get("HF_ENDPOINT"))  # fmt: skip

    def plan(self) -> StageResult:
        from hubkit.hub.push import push
        from hubkit.sizes import human_size

        if not self.out.is_dir():
            return StageResult(self.name, "would run", detail="after quantize")
        plan = push(self.options(dry_run=True))
        why = self._unvalidated()
        first = f"validates first ({why}); " if why else ""
        return StageResult(self.name, "would run", detail=f"{first}{len(plan.new)} new, {len(plan.changed)} changed, {human_size(plan.bytes_to_upload)}",
                           outputs={"new": plan.new, "changed": plan.changed})  # fmt: skip

    def options(self, dry_run: bool) -> PushOptions:
        return push_options(self.manifest, out=self.out, progress=self.release.options.progress, dry_run=dry_run)

    def run(self) -> StageResult:
        from hubkit.hub.push import head_commit, plural, push, remote_files

        release = self.release
        why = self._unvalidated()
        if why is not None:  # validate the export as it is now; push only what that validation read
            validate = release.stage("validate")
            checked = validate.run()
            if checked.status == "failed":
                return StageResult(self.name, "failed", detail=f"{why}; validated it first: {checked.detail}; "
                                   "nothing was pushed")  # fmt: skip
            release.record(validate.name, validate.fingerprint() or "", checked.outputs, checked.seconds)
        validated = validated_content(release)
        if validated is None:  # validation passed, but the export cannot be hashed as push would upload it
            export_snapshot(release, progress=False)  # says why, as push would
            return StageResult(self.name, "failed", detail="nothing is pushed without a passed validation")
        previous = self.previous_card()
        result = push(self.options(dry_run=False), validated=validated)
        if not result.passed:
            return StageResult(self.name, "failed", detail="; ".join(result.mismatches[:3]))
        current = card_text(self.out / "README.md") or ""
        release.result.card_diff = "".join(
            difflib.unified_diff(previous.splitlines(True), current.splitlines(True), "previous/README.md", "README.md")
        )
        api, retry = release.hub()
        repo, revision = self.manifest.release.repo, self.manifest.release.revision
        commit = head_commit(api, retry, repo, revision)
        files = retry.call("listing the pushed files", lambda: remote_files(api, repo, revision)) or {}
        before = f"{why}: validated it first, passed; " if why is not None else ""
        sent = len(result.new) + len(result.changed)
        return StageResult(self.name, "ran", detail=f"{before}{plural(sent, 'file')} uploaded",
                           outputs={"commit": commit, "files": len(files), "bytes": result.bytes_to_upload,
                                    "uploaded": sent, "unchanged": len(result.unchanged),
                                    "commits": len(result.commits), "seconds": result.upload_seconds,
                                    "pull_request": result.pull_request, "merged": result.merged})  # fmt: skip

    def _unvalidated(self) -> str | None:
        """Why the export, as it is now, is not the content of a passed validation; None when it is."""
        from hubkit.hub.push import first_difference

        validated, current = validated_content(self.release), content(self.release)
        if validated is None:
            return "no passed validation of this export under the current [validate] rules"
        if current is None:
            return "the export cannot be published as it is"
        changed = first_difference(validated, current)
        return None if changed is None else f"the export changed since its last passed validation ({changed})"

    def previous_card(self) -> str:
        """The card of the previous release on this run's endpoint, read into memory (never from or into the
        shared Hugging Face cache, which knows a repo by its name, not by its endpoint); "" when there is none."""
        from hubkit.checkpoint.hub_client import read_file

        release = self.manifest.release
        with contextlib.suppress(Exception):  # no previous release (or no card, or an unreadable one) is fine
            api, retry = self.release.hub()
            card = retry.call(
                "reading the previous card",
                lambda: read_file(api, release.repo, "README.md", release.revision, limit=CARD_LIMIT),
                retry_unreachable=False,  # no endpoint, no card to compare with: the push says why
            )
            return card.decode("utf-8", errors="replace") if card is not None else ""
        return ""


def push_options(manifest: Manifest, *, out: Path, progress: bool, dry_run: bool) -> PushOptions:
    """The manifest's ``[release]`` and ``[push]`` tables as the options of ``push`` (release validates and
    tags in stages of its own)."""
    from hubkit.hub.options import PushOptions
    from hubkit.options import from_manifest

    return from_manifest(
        PushOptions, manifest, folder=out, atomic=manifest.release.atomic and not dry_run, dry_run=dry_run,
        validate=False, progress=progress,
    )  # fmt: skip
