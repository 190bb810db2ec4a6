"""Linear probe on pre-extracted frozen features (DINO protocol, spec 1.6)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class LinearProbeResult:
    top1: float
    top5: float
    best_lr: float
    history: list[float] = field(default_factory=list)
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict)


def _accuracy(model: nn.Module, feats: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    with torch.no_grad():
        logits = model(feats)
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        top1 = (top[:, 0] == labels).float().mean().item()
        top5 = (top == labels[:, None]).any(dim=1).float().mean().item()
    return top1, top5


def _train_one(train_f: torch.Tensor, train_y: torch.Tensor, val_f: torch.Tensor, val_y: torch.Tensor,
               num_classes: int, epochs: int, lr: float, batch_size: int, momentum: float,
               weight_decay: float, seed: int) -> LinearProbeResult:
    g = torch.Generator().manual_seed(seed)
    model = nn.Linear(train_f.shape[1], num_classes).to(train_f.device)
    with torch.no_grad():
        model.weight.copy_(torch.randn(model.weight.shape, generator=g) * 0.01)
        model.bias.zero_()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    history = []
    for epoch in range(epochs):
        for group in opt.param_groups:  # cosine annealing per epoch to 0
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
        order = torch.randperm(len(train_f), generator=g).to(train_f.device)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            loss = F.cross_entropy(model(train_f[idx]), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        history.append(_accuracy(model, val_f, val_y)[0])
    top1, top5 = _accuracy(model, val_f, val_y)
    return LinearProbeResult(top1, top5, lr, history, {k: v.cpu() for k, v in model.state_dict().items()})


def train_linear_probe(
    train_features: torch.Tensor, train_labels: torch.Tensor, val_features: torch.Tensor, val_labels: torch.Tensor,
    num_classes: int, epochs: int = 100, lr: float | None = None, batch_size: int = 256, momentum: float = 0.9,
    weight_decay: float = 0.0, lrs: list[float] | None = None, device: str = "cpu", seed: int = 0,
) -> LinearProbeResult:
    """Linear(F, C) (init N(0, 0.01), bias 0, no BN), SGD momentum 0.9, no weight decay, cosine lr.

    Default lr = 0.001 x batch / 256. With `lrs`, one probe per lr and the best by val top-1 is
    returned, which is how DINO picks its lr (selected on the validation split).
    """
    if train_features.shape[1] != val_features.shape[1]:
        raise ValueError(f"train features have dim {train_features.shape[1]} but val features {val_features.shape[1]}")
    data = [t.to(device) for t in (train_features.float(), train_labels.long(), val_features.float(), val_labels.long())]
    candidates = lrs or [lr if lr is not None else 0.001 * batch_size / 256]
    results = [_train_one(*data, num_classes, epochs, c, batch_size, momentum, weight_decay, seed) for c in candidates]
    return max(results, key=lambda r: r.top1)
