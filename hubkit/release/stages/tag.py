"""The tag stage: ``[release] tag`` on the pushed commit, by push's own rule (a tag is never moved)."""

from __future__ import annotations

from hubkit.release.stages.base import Stage, StageResult, fingerprint


class Tag(Stage):
    name = "tag"

    def fingerprint(self) -> str | None:
        tag = self.manifest.release.tag
        return None if tag is None else fingerprint(tag, self._pushed())

    def _pushed(self) -> str | None:
        commit = self.release.recorded("push").get("outputs", {}).get("commit")
        return commit if isinstance(commit, str) else None

    def plan(self) -> StageResult:
        tag = self.manifest.release.tag
        return StageResult(self.name, "would run" if tag else "skipped", detail=tag or "no [release] tag")

    def run(self) -> StageResult:
        from hubkit.hub.push import TagExists, head_commit, tag_commit

        tag = self.manifest.release.tag
        if not tag:
            return StageResult(self.name, "skipped", detail="no [release] tag")
        api, retry = self.release.hub()
        repo = self.manifest.release.repo
        commit = self._pushed() or head_commit(api, retry, repo, self.manifest.release.revision)
        try:
            tag_commit(api, retry, repo, tag, commit)
        except TagExists as exc:  # claim nothing: say where the tag stays
            return StageResult(self.name, "skipped", detail=f"{tag} already names {exc.tagged} and is never moved; "
                               f"set a new [release] tag to tag {commit}", outputs={"tag": tag, "commit": exc.tagged})  # fmt: skip
        return StageResult(self.name, "ran", detail=tag, outputs={"tag": tag, "commit": commit})
