"""Weighted k-NN classifier on frozen features (DINO protocol, spec 1.6). Pure tensor maths."""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_classify(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    ks: tuple[int, ...] | list[int] = (10, 20, 100, 200),
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 256,
) -> dict[int, dict[str, float]]:
    """Top-1 / top-5 accuracy (fractions) for each k.

    Features are L2-normalised; each of the k most cosine-similar train samples votes for its
    label with weight exp(sim / T); the class with the largest summed vote wins.
    """
    if train_features.ndim != 2 or test_features.ndim != 2:
        raise ValueError("k-NN features must be 2-D (N, D) tensors")
    if len(train_features) == 0:
        raise ValueError("k-NN needs at least one train sample")
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(f"train features have dim {train_features.shape[1]} but test features {test_features.shape[1]}")
    if len(train_labels) != len(train_features) or len(test_labels) != len(test_features):
        raise ValueError("k-NN labels and features differ in length")
    classes = int(num_classes or int(max(train_labels.max(), test_labels.max())) + 1)
    train = F.normalize(train_features.float(), dim=1)
    test = F.normalize(test_features.float(), dim=1)
    k_max = min(max(ks), len(train))
    correct = {k: [0, 0] for k in ks}
    for start in range(0, len(test), chunk_size):
        sims, idx = (test[start : start + chunk_size] @ train.T).topk(k_max, dim=1)
        neighbour_labels = train_labels[idx]
        weights = (sims / temperature).exp()
        target = test_labels[start : start + chunk_size].view(-1, 1)
        for k in ks:
            kk = min(k, len(train))
            votes = torch.zeros(len(idx), classes)
            votes.scatter_add_(1, neighbour_labels[:, :kk], weights[:, :kk])
            ranked = votes.argsort(dim=1, descending=True)
            correct[k][0] += int((ranked[:, :1] == target).any(dim=1).sum())
            correct[k][1] += int((ranked[:, : min(5, classes)] == target).any(dim=1).sum())
    n = len(test)
    return {k: {"top1": c1 / n, "top5": c5 / n} for k, (c1, c5) in correct.items()}


def format_knn_table(results: dict[int, dict[str, float]]) -> str:
    lines = ["   k   top-1   top-5"]
    lines += [f"{k:>4}  {r['top1']:.4f}  {r['top5']:.4f}" for k, r in sorted(results.items())]
    return "\n".join(lines)
