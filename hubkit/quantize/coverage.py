"""Count calibration tokens routed to every expert, to report which experts never saw one."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch

ROUTER = re.compile(r".*\.mlp\.gate")


@dataclass
class ExpertCoverage:
    """Tokens per expert, per MoE router, gathered by forward hooks during calibration."""

    counts: dict[str, torch.Tensor] = field(default_factory=dict)
    _handles: list[Any] = field(default_factory=list)

    def attach(self, model: torch.nn.Module, num_experts: int, top_k: int) -> None:
        for name, module in model.named_modules():
            if ROUTER.fullmatch(name):
                self.counts[name] = torch.zeros(num_experts, dtype=torch.long)
                self._handles.append(module.register_forward_hook(self._hook(name, num_experts, top_k)))

    def _hook(self, name: str, num_experts: int, top_k: int) -> Any:
        def record(module: torch.nn.Module, inputs: Any, output: Any) -> None:
            indices = _routed_indices(output, top_k)
            if indices is not None:
                self.counts[name] += torch.bincount(indices.flatten().cpu(), minlength=num_experts)[:num_experts]

        return record

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def summary(self) -> dict[str, Any]:
        untouched = {name: [int(i) for i in torch.nonzero(c == 0).flatten()] for name, c in self.counts.items()}
        return {
            "routers": len(self.counts),
            "experts": sum(int(c.numel()) for c in self.counts.values()),
            "experts_without_tokens": sum(len(v) for v in untouched.values()),
            "backstop_experts": {name: ids for name, ids in untouched.items() if ids},
            "min_tokens_per_expert": min((int(c.min()) for c in self.counts.values()), default=0),
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
