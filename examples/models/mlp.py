"""A small MLP classifier (4 features -> 3 classes), the torch model of model_repo/.

Each version is the same architecture with different weights, so a client can tell versions
apart by their answers. `make model-repo` exports them with `tritonop repo export`.
"""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, features: int = 4, hidden: int = 32, classes: int = 3) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.layers(x), dim=-1)


def build(seed: int) -> MLP:
    torch.manual_seed(seed)
    return MLP().eval()


def build_v1() -> MLP:
    return build(1)


def build_v2() -> MLP:
    return build(2)
