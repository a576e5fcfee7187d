"""Count calibration tokens routed to every expert, to report which experts never saw one."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch

from hubkit.card.pictures import router_order

ROUTER = re.compile(r".*\.mlp\.gate")


@dataclass
class ExpertCoverage:
    """Tokens per expert, per MoE router, gathered by forward hooks during calibration.

    ``limit`` counts only a router's first ``limit`` forward calls: one pass over the calibration data, when a
    layer-by-layer run forwards the same data through a layer more than once.
    """

    num_experts: int = 0
    top_k: int = 1
    limit: int | None = None
    counts: dict[str, torch.Tensor] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    _handles: list[Any] = field(default_factory=list)

    def attach(self, model: torch.nn.Module) -> None:
        if not self.num_experts:
            return
        for name, module in model.named_modules():
            if ROUTER.fullmatch(name):
                self.counts.setdefault(name, torch.zeros(self.num_experts, dtype=torch.long))
                self.calls.setdefault(name, 0)
                self._handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name: str) -> Any:
        def record(module: torch.nn.Module, inputs: Any, output: Any) -> None:
            if self.limit is not None and self.calls[name] >= self.limit:
                return
            indices = _routed_indices(output, self.top_k)
            if indices is not None and not indices.is_meta:
                self.calls[name] += 1
                counted = torch.bincount(indices.flatten().cpu(), minlength=self.num_experts)
                self.counts[name] += counted[: self.num_experts]

        return record

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def state(self) -> dict[str, Any]:
        return {name: {"counts": c.tolist(), "calls": self.calls[name]} for name, c in self.counts.items()}

    def load(self, state: dict[str, Any]) -> None:
        for name, entry in state.items():
            self.counts[name] = torch.tensor(entry["counts"], dtype=torch.long)
            self.calls[name] = int(entry["calls"])

    def reduced(self) -> ExpertCoverage:
        """The counts summed over every process of a torch.distributed run (a copy; this one is unchanged)."""
        total = ExpertCoverage(self.num_experts, self.top_k, self.limit, {k: v.clone() for k, v in self.counts.items()})
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for name in sorted(total.counts):
                torch.distributed.all_reduce(total.counts[name])
        return total

    def summary(self) -> dict[str, Any]:
        untouched = {name: [int(i) for i in torch.nonzero(c == 0).flatten()] for name, c in self.counts.items()}
        return {
            "routers": len(self.counts),
            "experts": sum(int(c.numel()) for c in self.counts.values()),
            "experts_without_tokens": sum(len(v) for v in untouched.values()),
            "backstop_experts": {name: ids for name, ids in untouched.items() if ids},
            "min_tokens_per_expert": min((int(c.min()) for c in self.counts.values()), default=0),
            # per router, in layer order: what the card's expert-coverage heatmap is drawn from
            "tokens_per_expert": {name: self.counts[name].tolist() for name in sorted(self.counts, key=router_order)},
        }


def _routed_indices(output: Any, top_k: int) -> torch.Tensor | None:
    """Expert indices from a router's output: an integer tensor in a tuple, or the top-k of its logits."""
    if isinstance(output, tuple):
        for item in reversed(output):
            if isinstance(item, torch.Tensor) and not item.is_floating_point():
                return item
        output = output[0]
    if isinstance(output, torch.Tensor) and output.is_floating_point():
        return output.topk(top_k, dim=-1).indices
    return None
