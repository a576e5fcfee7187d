"""The smoke stage: the released checkpoint served and asked (``hubkit.release.smoke``); a pass renders the card
again, which may now say where the release was validated, and publishes just that change."""

from __future__ import annotations

from hubkit.records import record_folder, write_json, write_state
from hubkit.release.smoke import smoke_availability
from hubkit.release.stages.base import Stage, StageResult, fingerprint

#: The stages a passed smoke test runs again, in order.
AFTER_SMOKE = ("card", "validate", "push")


class Smoke(Stage):
    name = "smoke"

    def fingerprint(self) -> str:
        commit = self.release.recorded("push").get("outputs", {}).get("commit")
        return fingerprint(commit, self.manifest.smoke.model_dump())

    def plan(self) -> StageResult:
        smoke = self.manifest.smoke
        if not smoke.enabled:
            return StageResult(self.name, "skipped", detail="disabled in [smoke]")
        available, why = smoke_availability(self.manifest)
        if available:
            return StageResult(self.name, "would run", detail=why)
        return StageResult(self.name, "would fail" if smoke.required else "skipped", detail=why)

    def run(self) -> StageResult:
        from hubkit.release.smoke import run_smoke

        release, smoke = self.release, self.manifest.smoke
        if not smoke.enabled:
            return StageResult(self.name, "skipped", detail="disabled in [smoke]")
        available, why = smoke_availability(self.manifest)
        if not available and smoke.required:
            return StageResult(self.name, "failed", detail=f"did not run, and [smoke] required = true: {why}")
        if not available:
            return StageResult(self.name, "skipped", detail=f"skipped: {why}")
        if not self.out.is_dir():  # smoke alone (--from smoke) on a new folder: it is hubkit's from the start
            self.out.mkdir(parents=True)
            write_state(self.out, release.state)
        record = run_smoke(self.manifest, self.out)
        write_json(record_folder(self.out) / "smoke.json", record)
        if not record["ok"]:
            return StageResult(self.name, "failed", detail=record["summary"], outputs=record)
        for name in AFTER_SMOKE:
            stage = release.stage(name)
            outcome = stage.run()
            if outcome.status == "failed":
                return StageResult(self.name, "failed", detail=f"after smoke, {name}: {outcome.detail}", outputs=record)
            release.record(name, stage.fingerprint() or "", outcome.outputs, 0.0)
        return StageResult(self.name, "ran", detail=record["summary"], outputs=record)
