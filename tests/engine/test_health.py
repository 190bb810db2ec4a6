import torch

from vitssl.engine.health import CollapseMonitor
from vitssl.losses import teacher_statistics

K = 64


def floats(probs):
    return {k: float(v) for k, v in teacher_statistics(probs).items()}


def one_prototype():
    """Every image of the batch puts all its mass on prototype 3: (T=2, B=8, K)."""
    probs = torch.zeros(2, 8, K)
    probs[..., 3] = 1.0
    return probs


def uniform():
    return torch.full((2, 8, K), 1.0 / K)


def healthy():
    """Peaked, different prototypes for different images."""
    logits = torch.randn(2, 8, K, generator=torch.Generator().manual_seed(0)) * 3
    return logits.softmax(-1)


def test_one_prototype_collapse_warns_once_after_patience():
    monitor = CollapseMonitor(min_entropy=0.05, max_kl=0.05, patience=2)
    assert monitor.check(10, floats(one_prototype())) == []
    (message,) = monitor.check(20, floats(one_prototype()))
    assert "collapse to one prototype" in message and "step 20" in message
    assert "method.teacher_temp" in message and "center_momentum" in message
    assert monitor.check(30, floats(one_prototype())) == []  # once


def test_uniform_collapse_warns():
    monitor = CollapseMonitor(min_entropy=0.05, max_kl=0.05)
    (message,) = monitor.check(5, floats(uniform()))
    assert "uniform" in message and "lower method.teacher_temp" in message


def test_a_healthy_teacher_and_a_broken_streak_do_not_warn():
    monitor = CollapseMonitor(min_entropy=0.05, max_kl=0.05, patience=2)
    assert monitor.check(1, floats(healthy())) == []
    assert monitor.check(2, floats(uniform())) == []
    assert monitor.check(3, floats(healthy())) == []  # the streak restarts
    assert monitor.check(4, floats(uniform())) == []
    assert monitor.warned == set()


def test_methods_without_teacher_metrics_are_not_checked():
    assert CollapseMonitor(1.0, 1.0).check(1, {"loss": 0.5}) == []
