"""Expert coverage counted by forward hooks on MoE routers (the fast lane's check of what a quantize run records)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from hubkit.quantize.coverage import ExpertCoverage  # noqa: E402


class Router(torch.nn.Module):
    """A router that answers like DeepSeek-V3's: (indices, weights), each token sent to ``picks``."""

    def __init__(self, picks: list[int]) -> None:
        super().__init__()
        self.picks = torch.tensor(picks)

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        indices = self.picks.expand(hidden.shape[0], -1)
        return indices, torch.ones(indices.shape)


class LogitsRouter(torch.nn.Module):
    """A router that answers with logits; the top-k is taken from them."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tensor([[0.0, 5.0, 1.0, 4.0]]).expand(hidden.shape[0], -1)


def model(*routers: torch.nn.Module) -> torch.nn.Module:
    layers = torch.nn.ModuleList()
    for router in routers:
        layer = torch.nn.Module()
        layer.mlp = torch.nn.Module()
        layer.mlp.gate = router
        layers.append(layer)
    root = torch.nn.Module()
    root.layers = layers
    return root


def forward(root: torch.nn.Module, tokens: int = 3) -> None:
    for layer in root.layers:
        layer.mlp.gate(torch.zeros(tokens, 8))


def test_counts_tokens_per_expert_and_names_the_experts_without_any() -> None:
    root = model(Router([0, 2]), LogitsRouter())
    coverage = ExpertCoverage(num_experts=4, top_k=2, limit=1)
    coverage.attach(root)
    forward(root)
    forward(root)  # beyond the limit: not counted
    coverage.detach()
    forward(root)  # detached: not counted
    assert coverage.state() == {
        "layers.0.mlp.gate": {"counts": [3, 0, 3, 0], "calls": 1},
        "layers.1.mlp.gate": {"counts": [0, 3, 0, 3], "calls": 1},
    }
    summary = coverage.reduced().summary()
    assert summary["routers"] == 2 and summary["experts"] == 8
    assert summary["experts_without_tokens"] == 4 and summary["min_tokens_per_expert"] == 0
    assert summary["backstop_experts"] == {"layers.0.mlp.gate": [1, 3], "layers.1.mlp.gate": [0, 2]}


def test_state_round_trips_for_a_resumed_run() -> None:
    first = ExpertCoverage(num_experts=4, top_k=2)
    first.attach(model(Router([1, 3])))
    first.detach()
    first.counts["layers.0.mlp.gate"] += torch.tensor([1, 2, 3, 4])
    resumed = ExpertCoverage(num_experts=4, top_k=2)
    resumed.load(first.state())
    assert resumed.state() == first.state()
    assert ExpertCoverage().summary()["routers"] == 0  # no experts: nothing attached, nothing counted
