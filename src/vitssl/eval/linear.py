"""Linear probe on pre-extracted frozen features (DINO `eval_linear.py` protocol, DINO paper Sec. 3.2; facebookresearch/dino eval_knn.py, eval_linear.py).

DINO measures how linearly separable the frozen features are with a single Linear layer.
Training on cached features instead of re-running the backbone every epoch is much faster; the
price is that DINO's train-time RandomResizedCrop + flip augmentation is not applied (features
come from one fixed view per image), which the caller chooses when extracting.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

_EVAL_CHUNK = 4096  # val rows per forward pass when measuring accuracy


@dataclass
class LinearProbeResult:
    """Outcome of `train_linear_probe`: final-epoch val accuracies (fractions) of the kept probe.

    history: val top-1 after each epoch. DINO reports the best value seen during training,
    which is `best_top1`; `top1`/`top5` and `state_dict` are those of the final-epoch probe.
    """

    top1: float
    top5: float
    best_lr: float
    history: list[float] = field(default_factory=list)
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def best_top1(self) -> float:
        """Best per-epoch val top-1, DINO's reported number (selected on the val split)."""
        return max(self.history, default=self.top1)


class BatchNormLinear(nn.Sequential):
    """MAE's linear-probe head (MAE paper App. A.1, Tables 9-10; facebookresearch/mae FINETUNE.md): BatchNorm1d without affine parameters (eps 1e-6), then
    Linear. The normalisation only rescales each feature, which a linear layer could absorb,
    but it makes one lr fit features of any scale (MAE's MoCo-v3-style probe, MAE issue #5)."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__(OrderedDict(bn=nn.BatchNorm1d(in_features, affine=False, eps=1e-6),
                                     linear=nn.Linear(in_features, num_classes)))

    @property
    def out_features(self) -> int:
        return self.linear.out_features


def _accuracy(model: nn.Module, feats: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Top-1 and top-5 (top-min(5, C)) accuracy as fractions, in eval mode (BatchNorm: running stats)."""
    k = min(5, model.out_features)
    hits1 = hits5 = 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(feats), _EVAL_CHUNK):
            top = model(feats[start:start + _EVAL_CHUNK]).topk(k, dim=1).indices
            match = top == labels[start:start + _EVAL_CHUNK, None]
            hits1 += int(match[:, 0].sum())
            hits5 += int(match.any(dim=1).sum())
    model.train(was_training)
    return hits1 / len(feats), hits5 / len(feats)


def _train_one(train_f: torch.Tensor, train_y: torch.Tensor, val_f: torch.Tensor, val_y: torch.Tensor,
               num_classes: int, epochs: int, lr: float, batch_size: int, momentum: float,
               weight_decay: float, seed: int, batchnorm: bool = False) -> LinearProbeResult:
    """One probe at one lr; every random draw comes from a generator seeded with `seed`."""
    g = torch.Generator().manual_seed(seed)
    dim = train_f.shape[1]
    model: nn.Module = BatchNormLinear(dim, num_classes) if batchnorm else nn.Linear(dim, num_classes)
    model.to(train_f.device)
    linear = model.linear if batchnorm else model
    with torch.no_grad():  # DINO: weight N(0, 0.01), bias 0 (MAE: truncated N(0, 0.01))
        linear.weight.copy_(torch.randn(linear.weight.shape, generator=g) * 0.01)
        linear.bias.zero_()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    history: list[float] = []
    for epoch in range(epochs):
        # CosineAnnealingLR(T_max=epochs, eta_min=0) stepped once per epoch, as in DINO.
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
        order = torch.randperm(len(train_f), generator=g).to(train_f.device)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            if batchnorm and len(idx) < 2:  # batch statistics need two rows (MAE drops the last batch)
                continue
            loss = F.cross_entropy(model(train_f[idx]), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        history.append(_accuracy(model, val_f, val_y)[0])
    top1, top5 = _accuracy(model, val_f, val_y)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return LinearProbeResult(top1, top5, lr, history, state)


def _check_split(name: str, feats: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
    if feats.ndim != 2 or labels.ndim != 1:
        raise ValueError(f"{name} features must be (N, F) and labels (N,), got {tuple(feats.shape)} and {tuple(labels.shape)}")
    if len(feats) == 0:
        raise ValueError(f"the {name} set is empty")
    if len(labels) != len(feats):
        raise ValueError(f"{name} labels length {len(labels)} != number of {name} features {len(feats)}")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f"{name} labels must lie in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]")


def train_linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    num_classes: int,
    epochs: int = 100,
    lr: float | None = None,
    batch_size: int = 256,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    lrs: Sequence[float] | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    batchnorm: bool = False,
) -> LinearProbeResult:
    """Train DINO's linear probe on frozen features and report val top-1/top-5 (fractions).

    Linear(F, C) with weight N(0, 0.01), bias 0, no BatchNorm; SGD momentum 0.9, weight decay 0,
    cross-entropy on mini-batches shuffled by a generator seeded with `seed` (same seed, same
    probe); the lr follows a cosine from its base value to 0 over `epochs`, updated once per
    epoch like DINO's CosineAnnealingLR. `lr` is absolute; when omitted it is DINO's
    0.001 x batch_size / 256. DINO's paper sweeps the lr and reports the best on the validation
    split; `lrs` does the same: one probe per lr (same seed), and the probe with the highest
    final val top-1 is returned (ties: the earlier lr). Pass `lr` or `lrs`, not both.

    `batchnorm=True` is MAE's probe (MAE paper App. A.1, Tables 9-10; facebookresearch/mae FINETUNE.md): BatchNorm1d(affine=False, eps 1e-6) before the
    Linear layer (`BatchNormLinear`; state-dict keys `bn.*` and `linear.*`), trained on batch
    statistics and evaluated with the running ones. MAE feeds it the CLS token
    (n_last_blocks=1) and trains it with LARS at a large lr; here the optimizer stays SGD.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    _check_split("train", train_features, train_labels, num_classes)
    _check_split("val", val_features, val_labels, num_classes)
    if train_features.shape[1] != val_features.shape[1]:
        raise ValueError(f"train features have dim {train_features.shape[1]} but val features have dim {val_features.shape[1]}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    if lr is not None and lrs is not None:
        raise ValueError("pass either lr or lrs (a sweep), not both")
    if lrs is not None and len(lrs) == 0:
        raise ValueError("lrs is empty: give at least one learning rate")
    candidates = list(lrs) if lrs is not None else [lr if lr is not None else 0.001 * batch_size / 256]
    if min(candidates) <= 0:
        raise ValueError(f"learning rates must be > 0, got {candidates}")

    data = [t.to(device) for t in (train_features.float(), train_labels.long(),
                                   val_features.float(), val_labels.long())]
    best: LinearProbeResult | None = None
    for candidate in candidates:
        result = _train_one(*data, num_classes, epochs, float(candidate), batch_size, momentum, weight_decay, seed,
                            batchnorm)
        if best is None or result.top1 > best.top1:
            best = result
    assert best is not None
    return best
