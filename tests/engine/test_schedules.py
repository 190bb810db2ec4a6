import math

import numpy as np
import pytest

from vitssl.engine.schedules import cosine_schedule, scaled_lr, teacher_temperature


def dino_array(base, final, epochs, niter, warmup_epochs=0, start_warmup=0.0):
    """DINO's cosine_scheduler re-derived from its description (DINO paper Sec. 3.2; facebookresearch/dino main_dino.py defaults), as an array."""
    warmup = np.linspace(start_warmup, base, warmup_epochs * niter) if warmup_epochs else np.array([])
    iters = np.arange(epochs * niter - warmup_epochs * niter)
    cos = final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters)))
    return np.concatenate((warmup, cos))


def test_matches_reference_array_everywhere():
    ref = dino_array(1e-3, 1e-6, epochs=5, niter=7, warmup_epochs=2)
    got = [cosine_schedule(i, 35, 1e-3, 1e-6, warmup_steps=14) for i in range(35)]
    assert np.allclose(got, ref, rtol=1e-12, atol=0)


def test_values_at_warmup_end_and_last_step():
    assert cosine_schedule(0, 100, 1.0, 0.0, warmup_steps=10) == 0.0
    assert cosine_schedule(9, 100, 1.0, 0.0, warmup_steps=10) == 1.0  # last warm-up step reaches base
    assert cosine_schedule(10, 100, 1.0, 0.0, warmup_steps=10) == 1.0  # cosine starts at base
    last = cosine_schedule(99, 100, 1.0, 0.0, warmup_steps=10)
    assert last == pytest.approx(0.5 * (1 + math.cos(math.pi * 89 / 90)))
    assert cosine_schedule(10_000, 100, 1.0, 0.0, warmup_steps=10) == last  # held past the end


def test_momentum_schedule_goes_to_one():
    assert cosine_schedule(0, 1000, 0.996, 1.0) == 0.996
    assert cosine_schedule(999, 1000, 0.996, 1.0) == pytest.approx(1.0, abs=1e-7)


def test_teacher_temperature_per_epoch():
    assert teacher_temperature(0, 0.04, 0.07, 30) == 0.04
    assert teacher_temperature(29, 0.04, 0.07, 30) == pytest.approx(0.07)
    assert teacher_temperature(15, 0.04, 0.07, 30) == pytest.approx(0.04 + 0.03 * 15 / 29)
    assert teacher_temperature(100, 0.04, 0.07, 30) == 0.07
    assert teacher_temperature(0, 0.04, 0.04, 0) == 0.04


def test_linear_scaling_rule():
    assert scaled_lr(5e-4, 1024) == pytest.approx(2e-3)
