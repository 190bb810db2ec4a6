"""EsViT's view + region loss, region matching and both centers against the original's outputs.

tests/fixtures/parity/esvit_region_loss.npz: `main_esvit.DDINOLoss` called twice on the same
object (epochs 5 and 40) with the 4-tuples its Swin returns; B = 4, K = 64, region features of
width 32, 16 tokens per global view and 4 per local view. Region rows are ordered (view, image,
token), which is how vitssl's region head lays out (V_g * B, T) tokens. The losses compute in
float32, so inputs are cast down and compared at rtol 1e-5; the matches must be identical.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from vitssl.engine.schedules import teacher_temperature
from vitssl.losses import DINOLoss
from vitssl.losses.esvit import RegionLoss, match_regions
from vitssl.methods.esvit import EsViTConfig

GOLDEN = np.load(Path(__file__).resolve().parents[1] / "fixtures" / "parity" / "esvit_region_loss.npz")
FP32 = dict(rtol=1e-5, atol=1e-7, check_dtype=False)
B, K, C = int(GOLDEN["batch"]), int(GOLDEN["out_dim"]), int(GOLDEN["feat_dim"])


def golden(name: str) -> torch.Tensor:
    return torch.from_numpy(GOLDEN[name])


def student_regions(call: int, name: str, width: int) -> list[torch.Tensor]:
    """Student rows split by [N*B, N*B, n*B, n*B] into vitssl's per-resolution (V_g, B, T, width)."""
    n_global, n_local = (int(t) for t in GOLDEN[f"s_npatch_{call}"])
    rows = golden(f"{name}_{call}").float()
    split = 2 * B * n_global
    return [rows[:split].reshape(2, B, n_global, width), rows[split:].reshape(2, B, n_local, width)]


def teacher_regions(call: int, name: str, width: int) -> torch.Tensor:
    n_global = int(GOLDEN[f"t_npatch_{call}"][0])
    return golden(f"{name}_{call}").float().reshape(2, B, n_global, width)


def test_the_default_config_is_the_original_recipe():
    """Weights 1/2 + 1/2 and tau_t 0.04 -> 0.07 over 30 epochs, the values the fixture ran with."""
    cfg = EsViTConfig()
    assert (cfg.view_weight, cfg.region_weight) == (0.5, 0.5)
    for call in (1, 2):
        temp = teacher_temperature(int(GOLDEN[f"epoch_{call}"]), cfg.warmup_teacher_temp, cfg.teacher_temp,
                                   cfg.warmup_teacher_temp_epochs)
        assert temp == pytest.approx(float(GOLDEN[f"teacher_temp_{call}"]), rel=1e-12)


@pytest.mark.parametrize("call", [1, 2])
def test_region_matches_are_the_originals(call):
    """Every (teacher view i, student view v != i) pair: the most similar teacher token by cosine
    of the backbone features, per image and student token."""
    student = [view for group in student_regions(call, "s_fea", C) for view in group]
    teacher = teacher_regions(call, "t_fea", C)
    for i in range(2):
        for v in range(4):
            if v != i:
                expected = golden(f"match_{call}_t{i}_s{v}")
                assert torch.equal(match_regions(student[v], teacher[i]), expected), (i, v)


def test_view_and_region_loss_and_both_centers_over_two_calls():
    """Call 2 starts from the centers our own call 1 left; the total is the config's weighted sum,
    as `EsViT.training_step` assembles it."""
    cfg = EsViTConfig()
    view_loss = DINOLoss(K, float(GOLDEN["student_temp"]), float(GOLDEN["center_momentum"]))
    region_loss = RegionLoss(K, float(GOLDEN["student_temp"]), float(GOLDEN["center_momentum"]))
    assert_close(view_loss.center.center, golden("center_0"), rtol=0, atol=0, check_dtype=False)
    assert_close(region_loss.center.center, golden("center_grid_0"), rtol=0, atol=0, check_dtype=False)
    for call in (1, 2):
        temp = float(GOLDEN[f"teacher_temp_{call}"])
        view = view_loss(golden(f"s_cls_out_{call}").float().reshape(4, B, K),
                         golden(f"t_cls_out_{call}").float().reshape(2, B, K), temp)
        region = region_loss(student_regions(call, "s_region_out", K), student_regions(call, "s_fea", C),
                             teacher_regions(call, "t_region_out", K), teacher_regions(call, "t_fea", C), temp)
        view_loss.center.update()
        region_loss.center.update()
        assert_close(cfg.view_weight * view + cfg.region_weight * region, golden(f"loss_{call}"), **FP32)
        assert_close(view_loss.center.center, golden(f"center_{call}"), **FP32)
        assert_close(region_loss.center.center, golden(f"center_grid_{call}"), **FP32)
