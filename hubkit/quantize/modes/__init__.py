"""The quantize modes, registered by name, and ``choose``: the one decision of which mode a run takes.

Each mode is a class in its own module of this package, registered with ``@register("name")`` (as
llm-compressor registers its calibration pipelines); every module here is imported with the package, so a new
mode is one new module. ``choose`` is called alike by ``hubkit quantize`` (its run and its ``--plan``) and by the
release preflight. Light to import: a mode imports torch only when it runs.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from hubkit.errors import HubkitError
from hubkit.options.quantize import MODES as DECLARED_MODES

if TYPE_CHECKING:
    from hubkit.quantize.pipeline import Job, QuantizeResult
    from hubkit.quantize.plan import Estimate, Plan, Shape

AUTO = "auto"


class Mode:
    """One way to quantize a base: its name, what the plan predicts it needs, and its run."""

    name: ClassVar[str] = ""
    #: Where the mode sits in ``--mode`` choices and in the plan (lowest first).
    order: ClassVar[int] = 100
    #: Whether ``plan.py`` predicts this mode's needs (a mode that takes a base of its own format has its own plan).
    planned: ClassVar[bool] = True
    #: One model over every device (True), or one process per device, each with a share of the data (False).
    spans_devices: ClassVar[bool] = True

    def claims(self, config: dict[str, Any]) -> bool:
        """Whether a base with this ``config.json`` can only be taken by this mode (the cast: an MXFP4 base)."""
        return False

    def refusal(self, requested: str | None) -> str:
        """Why ``--mode requested`` cannot take a base this mode claims (None: why this mode cannot take the base)."""
        raise NotImplementedError

    def reason(self, config: dict[str, Any]) -> str:
        """Why a base this mode claims takes it."""
        raise NotImplementedError

    def estimate(self, shape: Shape, kind: str, tokens: int, batch: int, seq: int, world: int) -> Estimate:
        """Predicted peak device, host and disk bytes and seconds per layer on ``kind`` (``cpu`` or ``cuda``)."""
        raise HubkitError(f"the plan has no estimate for --mode {self.name}")

    def run(self, job: Job) -> QuantizeResult:
        raise NotImplementedError


class CalibratedMode(Mode):
    """A mode that calibrates the base on data with modelopt; ``pipeline.run_calibrated`` runs its steps."""

    def staging(self, job: Job) -> Path:
        """The prepared staging folder the export is written into."""
        from hubkit.quantize.pipeline import prepare_out

        return prepare_out(job.options.out)[0]

    def calibrate(self, job: Job) -> tuple[dict[str, Any], bool]:
        """Calibrate and export into ``job.staging``: the expert coverage, and whether the CPU NVFP4 stand-ins ran."""
        raise NotImplementedError

    def record(self, job: Job) -> dict[str, Any]:
        """What provenance's ``run`` records of this mode beyond the common keys."""
        return {}

    def keeps_progress(self, staging: Path) -> bool:
        """Whether a failed run's staging folder holds progress a rerun resumes (else it is removed)."""
        return False

    def finished(self, job: Job) -> None:
        """After the export is in place: remove what only this mode's run needed."""

    def run(self, job: Job) -> QuantizeResult:
        from hubkit.quantize.pipeline import run_calibrated

        return run_calibrated(job, self)


M = TypeVar("M", bound=type[Mode])
_REGISTRY: dict[str, Mode] = {}


def register(name: str) -> Callable[[M], M]:
    """Class decorator: register a mode under ``name`` (the ``--mode`` value)."""

    def add(cls: M) -> M:
        if name == AUTO:
            raise ValueError(f"{AUTO!r} is --mode's own choice, not a mode")
        if name in _REGISTRY:
            raise ValueError(f"quantize mode {name!r} is registered twice")
        cls.name = name
        _REGISTRY[name] = cls()
        return cls

    return add


def registered() -> list[Mode]:
    """Every mode, in order."""
    return sorted(_REGISTRY.values(), key=lambda mode: (mode.order, mode.name))


def names() -> tuple[str, ...]:
    """The ``--mode`` choices: ``auto`` and every registered mode."""
    return (AUTO, *(mode.name for mode in registered()))


def planned() -> list[Mode]:
    """The modes whose needs ``plan.py`` predicts, in order."""
    return [mode for mode in registered() if mode.planned]


def get(name: str) -> Mode:
    """The mode registered as ``name``; an unknown name is refused with the choices."""
    if name not in _REGISTRY:
        raise HubkitError(f"--mode {name!r} is not one of {', '.join(names())}")
    return _REGISTRY[name]


@dataclass(frozen=True)
class Choice:
    """The mode a run takes, why, and the plan it was chosen on (None where no plan was needed)."""

    mode: Mode
    reason: str
    plan: Plan | None = None


def choose(
    requested: str,
    *,
    config: dict[str, Any],
    plan: Callable[[], Plan],
    world: int = 1,
    resuming: Callable[[], Path | None] = lambda: None,
) -> Choice:
    """The mode for ``--mode requested`` on a base with this ``config.json``.

    A base that one mode claims (an MXFP4 base: the cast) takes that mode. Otherwise ``plan`` is made: under
    ``torchrun`` (``world`` > 1) the run is layerwise, data-parallel; ``auto`` resumes a kept layerwise run of the
    same inputs (``resuming``: its staging folder), else takes the plan's choice; a named mode is taken as named.
    """
    if requested != AUTO:
        get(requested)
    claimed = next((mode for mode in registered() if mode.claims(config)), None)
    if claimed is not None:
        if requested not in (AUTO, claimed.name):
            raise HubkitError(claimed.refusal(requested))
        return Choice(claimed, claimed.reason(config))
    if requested != AUTO and not get(requested).planned:
        raise HubkitError(get(requested).refusal(None))
    made = plan()
    if world > 1:
        if requested != AUTO and get(requested).spans_devices:
            raise HubkitError(
                f"--mode {requested} runs in one process over every visible GPU; run it without torchrun, "
                "or use --mode layerwise (data-parallel under torchrun)"
            )
        return Choice(get("layerwise"), f"layerwise: launched by torchrun with {world} processes (data-parallel)", made)
    if requested == AUTO:
        kept = resuming()
        if kept is not None:
            return Choice(get("layerwise"), f"layerwise: resuming the run kept in {kept}", made)
        name, why = made.choose()
        return Choice(get(name), why, made)
    return Choice(get(requested), f"{requested}: chosen with --mode", made)


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

# The --mode choices are declared with the other options (below this layer, in ``hubkit.options.quantize``) so
# that the CLI, the manifest and its schema list them; a module here without its name there fails at import.
if set(names()) != set(DECLARED_MODES):
    raise ImportError(
        f"quantize modes {sorted(names())} differ from --mode's declared choices {sorted(DECLARED_MODES)}: "
        "add the new mode's name to MODES in hubkit/options/quantize.py"
    )
