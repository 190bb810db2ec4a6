"""Weighted k-NN classifier on frozen features (DINO `eval_knn.py` protocol, DINO paper Sec. 3.2; facebookresearch/dino eval_knn.py, eval_linear.py).

DINO reports 20-NN accuracy of the teacher's CLS features as its training-free measure of
representation quality: no parameters are fitted, so it is cheap and cannot overfit the probe.
Pure tensor maths; runs on whatever device the features are on.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from vitssl.engine.logging import log


def _validate(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
              test_labels: torch.Tensor, ks: Sequence[int], temperature: float, chunk_size: int) -> None:
    if train_features.ndim != 2 or test_features.ndim != 2:
        raise ValueError(f"k-NN features must be 2-D (N, D), got train {tuple(train_features.shape)} "
                         f"and test {tuple(test_features.shape)}")
    if train_labels.ndim != 1 or test_labels.ndim != 1:
        raise ValueError("k-NN labels must be 1-D (N,) tensors")
    if len(train_features) == 0:
        raise ValueError("k-NN needs at least one train sample, the train set is empty")
    if len(test_features) == 0:
        raise ValueError("k-NN needs at least one test sample, the test set is empty")
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(f"train features have dim {train_features.shape[1]} "
                         f"but test features have dim {test_features.shape[1]}")
    if len(train_labels) != len(train_features):
        raise ValueError(f"train labels length {len(train_labels)} != number of train features {len(train_features)}")
    if len(test_labels) != len(test_features):
        raise ValueError(f"test labels length {len(test_labels)} != number of test features {len(test_features)}")
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be a non-empty list of positive integers, got {list(ks)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")


@torch.no_grad()
def knn_classify(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    ks: Sequence[int] = (10, 20, 100, 200),
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 256,
) -> dict[int, dict[str, float]]:
    """{k: {"top1": fraction, "top5": fraction}} of the DINO weighted k-NN for each k in `ks`.

    Both feature sets are L2-normalised (so only directions matter); each of the k most
    cosine-similar train samples votes for its label with weight exp(sim / T) (DINO: T = 0.07,
    k in {10, 20, 100, 200}); the class with the largest summed vote is the prediction. A k larger
    than the train set is clipped to its size. The test set is processed `chunk_size` queries
    at a time so the (chunk, N_train) similarity matrix bounds memory. A class that received no
    vote never counts as a top-5 hit (their relative order is arbitrary), so with fewer than five
    voting classes top-5 is over the voting classes only, as DINO's min(5, k) cut-off intends.
    `num_classes` defaults to 1 + the largest label seen.
    """
    _validate(train_features, train_labels, test_features, test_labels, ks, temperature, chunk_size)
    device = train_features.device
    train_labels = train_labels.to(device).long()
    test_labels = test_labels.to(device).long()
    seen = int(max(train_labels.max(), test_labels.max())) + 1
    if min(int(train_labels.min()), int(test_labels.min())) < 0:
        raise ValueError("k-NN labels must be non-negative class indices")
    classes = seen if num_classes is None else int(num_classes)
    if classes < seen:
        raise ValueError(f"num_classes={classes} but labels go up to {seen - 1}")

    train = F.normalize(train_features.float(), dim=1)
    test = F.normalize(test_features.to(device).float(), dim=1)
    k_max = min(max(ks), len(train))
    too_big = sorted(k for k in ks if k > len(train))
    if too_big:
        log.warning("k-NN: k = %s exceeds the memory bank of %d train images: those rows are the k = %d result "
                    "(every train image votes); use k <= %d", ", ".join(map(str, too_big)), len(train), len(train),
                    len(train))
    top = min(5, classes)
    hits = {k: [0, 0] for k in ks}
    for start in range(0, len(test), chunk_size):
        sims, idx = (test[start:start + chunk_size] @ train.T).topk(k_max, dim=1)  # sorted, most similar first
        neighbour_labels = train_labels[idx]
        weights = (sims / temperature).exp()
        target = test_labels[start:start + chunk_size, None]
        for k in ks:
            kk = min(k, len(train))
            votes = torch.zeros(len(idx), classes, device=device)
            votes.scatter_add_(1, neighbour_labels[:, :kk], weights[:, :kk])
            best_votes, ranked = votes.topk(top, dim=1)
            match = (ranked == target) & (best_votes > 0)
            hits[k][0] += int(match[:, 0].sum())
            hits[k][1] += int(match.any(dim=1).sum())
    n = len(test)
    return {k: {"top1": h1 / n, "top5": h5 / n} for k, (h1, h5) in hits.items()}


def format_knn_table(results: dict[int, dict[str, float]]) -> str:
    """Plain-text table of `knn_classify` results, one row per k, accuracies as fractions."""
    lines = ["    k   top-1   top-5"]
    lines += [f"{k:>5}  {r['top1']:.4f}  {r['top5']:.4f}" for k, r in sorted(results.items())]
    return "\n".join(lines)
