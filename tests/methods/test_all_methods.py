"""Every registered method: one CPU step, finite loss, gradients only in the student."""

import pytest
import torch

from helpers import one_batch, tiny_method
from vitssl.engine.protocol import Method, StepContext
from vitssl.methods import METHODS


@pytest.mark.parametrize("name", sorted(METHODS))
def test_one_step_trains_student_only(name):
    method = tiny_method(name)
    assert isinstance(method, Method)
    ctx = StepContext(step=0, epoch=1, steps_per_epoch=10, total_steps=20, epochs=2)
    out = method.training_step(one_batch(method), ctx)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    trainable = {id(p) for _, p in method.trainable_parameters()}
    for pname, p in method.named_parameters():
        if id(p) in trainable:
            assert p.grad is not None, f"no gradient reached {pname}"
        else:
            assert p.grad is None, f"{pname} is not trained but received a gradient"
    assert trainable, "a method must train something"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_evaluation_backbone_gives_tokens(name):
    method = tiny_method(name)
    tokens = method.evaluation_backbone()(torch.randn(2, 3, 16, 16))
    assert tokens.pooled.shape[0] == 2


@pytest.mark.parametrize("name", sorted(METHODS))
def test_collapse_statistics_are_computed_only_on_log_steps(name):
    """The teacher's entropy, KL and mutual information feed the log only: skipped elsewhere."""
    from dataclasses import replace

    from vitssl.engine.health import COLLAPSE_KEYS

    method = tiny_method(name)
    batch = one_batch(method)
    ctx = StepContext(step=0, epoch=1, steps_per_epoch=10, total_steps=20, epochs=2)
    logged = method.training_step(batch, ctx).metrics
    if not set(COLLAPSE_KEYS) & set(logged):
        pytest.skip(f"{name} reports no collapse statistics")
    quiet = method.training_step(batch, replace(ctx, logged=False)).metrics
    assert set(COLLAPSE_KEYS) <= set(logged) and not set(COLLAPSE_KEYS) & set(quiet)
    assert set(quiet) == set(logged) - set(COLLAPSE_KEYS)
