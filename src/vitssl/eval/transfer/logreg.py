"""L2-regularised multinomial logistic regression on frozen features, with the inverse
regularisation strength C chosen on a validation split (CLIP, Radford et al. 2021, Sec. 3.2 and
App. A.3: C swept over 1e-6 .. 1e6 on validation data, then the classifier is refit on train +
val and scored once on test; ELEVATER's linear-probe protocol follows it).

The sweep is coarse to fine: every decade of 1e-6 .. 1e6, then `REFINE_STEPS` steps per decade
within one decade either side of the best (CLIP searches the same range with a parametric
binary search to the same resolution). Features are standardised with the statistics of the split being fitted.
Two solvers reach the same optimum: scikit-learn's L-BFGS (`backend="sklearn"`, CPU) and a
full-batch torch L-BFGS on the same objective (`backend="torch"`, for a GPU).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from vitssl.eval.transfer.metrics import score

log = logging.getLogger("vitssl.transfer")
COARSE_GRID = tuple(float(10.0**e) for e in range(-6, 7))
REFINE_STEPS = 8  # CLIP searches to 8 steps per decade
MAX_ITER = 1000
BACKENDS = ("sklearn", "torch")


def standardise(fit: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Zero mean, unit variance with `fit`'s statistics (constant columns are left at 0)."""
    mean, std = fit.mean(axis=0), fit.std(axis=0)
    std[std < 1e-12] = 1.0
    return [(a - mean) / std for a in (fit, *others)]


def _sklearn_probs(x: np.ndarray, y: np.ndarray, evals: list[np.ndarray], c: float, k: int) -> list[np.ndarray]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, solver="lbfgs", max_iter=MAX_ITER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    out = []
    for e in evals:  # classes absent from the fitting split get probability 0
        full = np.zeros((len(e), k))
        full[:, model.classes_] = model.predict_proba(e)
        out.append(full)
    return out


def torch_logistic_regression(x: torch.Tensor, y: torch.Tensor, c: float, num_classes: int
                              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights (F, K) and bias (K,) minimising scikit-learn's objective `C * sum_i CE_i +
    ||W||^2 / 2` (bias unpenalised), divided by C*N for conditioning; full-batch L-BFGS with a
    strong-Wolfe line search, on `x`'s device and dtype. Two classes are one logistic unit,
    as in scikit-learn (class 0's column is fixed at 0)."""
    cols = 1 if num_classes == 2 else num_classes
    w = torch.zeros(x.shape[1], cols, device=x.device, dtype=x.dtype, requires_grad=True)
    b = torch.zeros(cols, device=x.device, dtype=x.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], lr=1, max_iter=MAX_ITER, history_size=20, tolerance_grad=1e-10,
                                  tolerance_change=1e-14, line_search_fn="strong_wolfe")
    penalty = 1.0 / (2.0 * c * len(x))

    def logits(w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        z = x @ w + b
        return torch.cat([torch.zeros_like(z), z], dim=1) if cols == 1 else z

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits(w, b), y) + penalty * (w * w).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    w, b = w.detach(), b.detach()
    if cols == 1:
        w, b = torch.cat([torch.zeros_like(w), w], dim=1), torch.cat([torch.zeros_like(b), b])
    return w, b


def _torch_probs(x: np.ndarray, y: np.ndarray, evals: list[np.ndarray], c: float, k: int,
                 device: str) -> list[np.ndarray]:
    dtype = torch.float64 if torch.device(device).type == "cpu" else torch.float32
    as_t = lambda a: torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
    w, b = torch_logistic_regression(as_t(x), torch.as_tensor(y, device=device), c, k)
    return [torch.softmax(as_t(e) @ w + b, dim=1).cpu().numpy() for e in evals]


def fit_and_score(x: np.ndarray, y: np.ndarray, evals: list[np.ndarray], c: float, num_classes: int,
                  backend: str = "sklearn", device: str = "cpu") -> list[np.ndarray]:
    """Fit on (x, y) and return class probabilities (N, K) of each array in `evals`."""
    if backend == "torch":
        return _torch_probs(x, y, evals, c, num_classes, device)
    return _sklearn_probs(x, y, evals, c, num_classes)


@dataclass
class SweepResult:
    """The chosen C, the val score of every C tried, and the test score after the refit."""

    best_c: float
    test_score: float
    val_scores: dict[float, float] = field(default_factory=dict)


def refine_grid(best: float, steps: int = REFINE_STEPS) -> list[float]:
    """`steps` points per decade within one decade either side of `best`."""
    e = np.log10(best)
    return [float(v) for v in np.logspace(e - 1, e + 1, 2 * steps + 1)]


def choose_c(val_scores: dict[float, float]) -> float:
    """The best-scoring C; among equal scores the smallest (the most regularised)."""
    top = max(val_scores.values())
    return min(c for c, s in val_scores.items() if s >= top - 1e-12)


def sweep_c(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
            test: tuple[np.ndarray, np.ndarray], metric: str, num_classes: int, grid: list[float] | None = None,
            refine: bool = True, backend: str = "sklearn", device: str = "cpu") -> SweepResult:
    """Choose C on val (fitting on train), refit on train + val with it, score test."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown solver '{backend}': use one of {', '.join(BACKENDS)}")
    tr_x, va_x = standardise(train[0], val[0])
    scores: dict[float, float] = {}

    def evaluate(cs: list[float]) -> None:
        for c in cs:
            if c not in scores:
                (probs,) = fit_and_score(tr_x, train[1], [va_x], c, num_classes, backend, device)
                scores[c] = score(metric, probs, val[1])

    evaluate(list(grid or COARSE_GRID))
    if refine:
        evaluate(refine_grid(choose_c(scores)))
    best = choose_c(scores)
    all_x, all_y = np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]])
    fit_x, te_x = standardise(all_x, test[0])
    (probs,) = fit_and_score(fit_x, all_y, [te_x], best, num_classes, backend, device)
    log.info("C swept over %d values: best %.3g (val %.4f)", len(scores), best, scores[best])
    return SweepResult(best, score(metric, probs, test[1]), dict(sorted(scores.items())))
