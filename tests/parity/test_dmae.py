"""D-MAE-Lite's attention-distillation loss against the original `MAE_distill`'s outputs.

tests/fixtures/parity/dmae_attn_distill.npz: the scaled, pre-softmax attention logits of the
last of 2 blocks of student and teacher on the same 16 visible patches (+ CLS), and the 1x1
head-mixing adapter's weight, with equal (4 -> 4) and unequal (3 -> 6) head counts. The adapter
runs in float64 or float32; the MSE computes in float32 (rtol 1e-5).
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from vitssl.heads.attention_mixer import AttentionMixer
from vitssl.losses.attention_distill import distillation_mse
from vitssl.methods.mae_distill import MAEDistillConfig, resolve_layers

GOLDEN = np.load(Path(__file__).resolve().parents[1] / "fixtures" / "parity" / "dmae_attn_distill.npz")


def golden(name: str) -> torch.Tensor:
    return torch.from_numpy(GOLDEN[name])


def test_the_default_config_distils_the_originals_block_with_its_weight():
    """Their `distill_attn_idx=(2,)` of 2 blocks (1-based, the last) is vitssl's -1 (0-based 1)."""
    cfg = MAEDistillConfig()
    assert cfg.attn_alpha == float(GOLDEN["distill_attn_alpha"])
    assert cfg.mask_ratio == float(GOLDEN["mask_ratio"])
    assert resolve_layers(cfg.distill_attn_layers, 2, "layers", "student") == [2 - 1]
    assert cfg.distill_hidden_layers == []


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("variant", ["eq", "ne"])
def test_attention_distillation_loss_is_the_originals(variant, dtype):
    weight = golden(f"adapter_weight_{variant}")  # (teacher heads, student heads, 1, 1)
    adapter = AttentionMixer(student_heads=weight.shape[1], teacher_heads=weight.shape[0]).to(dtype)
    adapter.load_state_dict({"mix.weight": weight.to(dtype)})
    student = golden(f"attn_student_{variant}").to(dtype).requires_grad_()
    teacher = golden(f"attn_teacher_{variant}").to(dtype).requires_grad_()
    loss = distillation_mse(adapter(student), teacher)
    assert_close(loss, golden(f"loss_attn_{variant}"), rtol=1e-5, atol=0.0, check_dtype=False)
    loss.backward()
    assert teacher.grad is None  # the teacher side carries no gradient
