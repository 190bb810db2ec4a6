"""The logistic-regression sweep of the transfer suites (CLIP / ELEVATER protocol) and the
sets' official metrics, against facts computed independently."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from vitssl.eval.transfer.logreg import (
    choose_c,
    refine_grid,
    standardise,
    sweep_c,
    torch_logistic_regression,
)
from vitssl.eval.transfer.metrics import average_precision_11, mean_per_class, roc_auc, score


def overfitting_problem(seed=0, n_train=30, n_eval=400, noise_dims=300):
    """One informative feature among noise features, balanced classes."""
    rng = np.random.default_rng(seed)

    def draw(n):
        y = np.arange(n) % 2
        x = rng.normal(size=(n, noise_dims + 1))
        x[:, 0] += 1.5 * (2 * y - 1)
        return x, y

    return draw(n_train), draw(n_eval), draw(n_eval)


def imbalanced_separable(seed=0):
    """Two well-separated 1-D clusters; train is 90 % class 0, val and test are balanced.
    Known answer: a tiny C shrinks the weight to ~0 and the unpenalised intercept predicts the
    majority class everywhere (accuracy 0.5); a large enough C separates the clusters (1.0)."""
    rng = np.random.default_rng(seed)

    def draw(n0, n1):
        y = np.r_[np.zeros(n0, int), np.ones(n1, int)]
        return np.c_[np.where(y == 1, 2.0, -2.0) + rng.normal(scale=0.3, size=len(y)), rng.normal(size=len(y))], y

    return draw(180, 20), draw(100, 100), draw(100, 100)


def test_the_sweep_picks_the_smallest_c_that_is_best_on_val():
    train, val, test = imbalanced_separable()
    grid = [1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 1e3]
    result = sweep_c(train, val, test, "top1", 2, grid=grid, refine=False)
    assert result.val_scores[1e-6] == 0.5  # all majority class
    assert max(result.val_scores.values()) == 1.0
    assert result.best_c == min(c for c in grid if result.val_scores[c] == 1.0) > 1e-6
    assert result.test_score == 1.0  # refit on train + val with that C
    # and every val score is what scikit-learn gives when fitted directly
    tr_x, va_x = standardise(train[0], val[0])
    direct = {c: LogisticRegression(C=c, max_iter=1000).fit(tr_x, train[1]).score(va_x, val[1]) for c in grid}
    assert result.val_scores == pytest.approx(direct)


def test_refinement_adds_points_around_the_best_decade_only():
    assert refine_grid(1.0, steps=2) == pytest.approx([0.1, 10**-0.5, 1.0, 10**0.5, 10.0])
    train, val, test = overfitting_problem(seed=1)
    result = sweep_c(train, val, test, "top1", 2, grid=[1e-3, 1e-1, 10.0], refine=True)
    coarse_best = choose_c({c: result.val_scores[c] for c in (1e-3, 1e-1, 10.0)})
    extra = set(result.val_scores) - {1e-3, 1e-1, 10.0}
    assert extra and all(coarse_best / 10.0001 <= c <= coarse_best * 10.0001 for c in extra)


def test_ties_go_to_the_most_regularised_c():
    assert choose_c({0.01: 0.9, 1.0: 0.9, 100.0: 0.8}) == 0.01


@pytest.mark.parametrize("classes", [2, 4])
def test_torch_lbfgs_reaches_scikit_learns_optimum(classes):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 12))
    y = (x[:, :3] @ rng.normal(size=(3, classes))).argmax(axis=1)
    x += rng.normal(scale=0.5, size=x.shape)
    for c in (0.05, 1.0):
        ref = LogisticRegression(C=c, max_iter=5000, tol=1e-10).fit(x, y)
        w, b = torch_logistic_regression(torch.as_tensor(x), torch.as_tensor(y), c, classes)
        ours = torch.softmax(torch.as_tensor(x) @ w + b, dim=1).numpy()
        assert np.abs(ours - ref.predict_proba(x)).max() < 1e-4


def test_both_solvers_choose_the_same_c():
    train, val, test = imbalanced_separable(seed=3)
    grid = [1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    a = sweep_c(train, val, test, "top1", 2, grid=grid, refine=False, backend="sklearn")
    b = sweep_c(train, val, test, "top1", 2, grid=grid, refine=False, backend="torch")
    assert a.best_c == b.best_c and a.test_score == b.test_score
    assert b.val_scores == pytest.approx(a.val_scores, abs=0.01)


def test_metrics_against_hand_counts():
    labels = np.array([0, 0, 0, 0, 1])
    scores = np.eye(2)[[0, 0, 0, 0, 0]]  # always class 0
    assert score("top1", scores, labels) == 0.8
    assert mean_per_class(scores, labels) == 0.5  # class 0 all right, class 1 all wrong
    # one positive ranked second of three: precision 1/2 at every recall level -> AP 0.5
    assert average_precision_11(np.array([0.9, 0.5, 0.1]), np.array([False, True, False])) == pytest.approx(0.5)
    assert roc_auc(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), np.array([0, 1, 1])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="two classes"):
        roc_auc(np.ones((2, 3)), np.array([0, 1]))
