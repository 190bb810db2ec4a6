"""The fast path (multi-tensor EMA and clipping, compiled step) computes what the plain code does."""

import pytest
import torch
from torch import nn

from distributed_helpers import GLOBAL_BATCH, make_trainer, run_steps
from vitssl.engine.ema import ema_update
from vitssl.engine.optim import clip_gradients


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.LayerNorm(7), nn.Linear(7, 3), nn.Conv1d(3, 2, 2))


def test_fused_ema_equals_the_per_tensor_loop():
    student, teacher = _net(0), _net(1)
    want = [t.detach().clone() for t in teacher.parameters()]
    for t, s in zip(want, student.parameters()):  # DINO's loop: one mul_ and one add_ per tensor
        t.mul_(0.996).add_((1 - 0.996) * s.detach())
    ema_update(teacher, student, 0.996)
    for got, ref in zip(teacher.parameters(), want):
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-7)


def _grads(seed: int) -> list[nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    params = []
    for shape, scale in [((4, 3), 10.0), ((7,), 0.01), ((2, 2, 2), 1.0), ((5,), 0.0), ((3, 3), 4.0)]:
        p = nn.Parameter(torch.zeros(shape))
        p.grad = torch.randn(shape, generator=g) * scale
        params.append(p)
    return params


def _dino_reference_clip(params: list[nn.Parameter], max_norm: float) -> list[float]:
    """DINO's utils.clip_gradients, restated: a `.item()`-style per-tensor loop."""
    norms = []
    for p in params:
        norm = p.grad.norm(2)
        norms.append(float(norm))
        coef = max_norm / (norm + 1e-6)
        if coef < 1:
            p.grad.mul_(coef)
    return norms


@pytest.mark.parametrize("sharded", [False, True])
def test_foreach_per_tensor_clipping_equals_dinos_loop(sharded):
    """Each tensor is clipped to 3.0 on its own; the sharded (FSDP) code path gives the same
    answer on one process, where the cross-rank sum is the identity."""
    want, got = _grads(0), _grads(0)
    ref_norms = _dino_reference_clip(want, 3.0)
    norms = clip_gradients(got, 3.0, "per_tensor", sharded=sharded)
    assert norms.tolist() == pytest.approx(ref_norms, rel=1e-6)
    for p, q in zip(got, want):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-7)
    assert max(float(p.grad.norm()) for p in got) <= 3.0 + 1e-5


def test_sharded_global_clipping_equals_torch_clip_grad_norm():
    want, got = _grads(1), _grads(1)
    total = torch.nn.utils.clip_grad_norm_(want, 3.0)
    assert float(clip_gradients(got, 3.0, "global", sharded=True)) == pytest.approx(float(total), rel=1e-6)
    for p, q in zip(got, want):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-7)


def test_trainer_step_with_compile_off_is_the_plain_step():
    """`train.compile=false` (the CPU default) runs the same step as a trainer built without the key."""
    plain = run_steps(make_trainer(None, GLOBAL_BATCH, 1), 1)
    flagged = run_steps(make_trainer(None, GLOBAL_BATCH, 1, ("train.compile=false",)), 1)
    assert flagged[0] == plain[0]
    for key, value in plain[1].items():
        assert torch.equal(flagged[1][key], value), key


def test_compiled_step_traces_the_method_and_matches_eager(monkeypatch):
    """`train.compile=true` compiles the whole training step (Dynamo capture of teacher, student,
    loss and the center's running sums). Inductor needs ~4 minutes for this on a CPU, so the
    test compiles with the `aot_eager` backend: the same graph capture and autograd split,
    without code generation."""
    original = nn.Module.compile
    monkeypatch.setattr(nn.Module, "compile", lambda self, **kw: original(self, backend="aot_eager"))
    plain = run_steps(make_trainer(None, GLOBAL_BATCH, 1), 1)
    compiled_trainer = make_trainer(None, GLOBAL_BATCH, 1, ("train.compile=true",))
    compiled = run_steps(compiled_trainer, 1)
    assert compiled_trainer.parallel.module._compiled_call_impl is not None
    assert compiled[0] == pytest.approx(plain[0], rel=1e-5)
    for key, value in plain[1].items():
        torch.testing.assert_close(compiled[1][key], value, rtol=1e-4, atol=1e-5, msg=key)
