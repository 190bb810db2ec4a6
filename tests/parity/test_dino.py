"""DINO's loss, center and teacher-temperature schedule against the original's outputs.

tests/fixtures/parity/dino_loss.npz: `main_dino.DINOLoss` called twice on the same object
(epochs 5 and 40), B = 4 images, 2 global + 2 local views, K = 64, rows view-major.
vitssl's loss computes in float32, so the inputs are cast down and compared at rtol 1e-5.
"""

from pathlib import Path

import numpy as np
import torch
from torch.testing import assert_close

from vitssl.engine.schedules import teacher_temperature
from vitssl.losses import DINOLoss

GOLDEN = np.load(Path(__file__).resolve().parents[1] / "fixtures" / "parity" / "dino_loss.npz")
FP32 = dict(rtol=1e-5, atol=1e-7, check_dtype=False)


def golden(name: str) -> torch.Tensor:
    return torch.from_numpy(GOLDEN[name])


def reference_temperature(epoch: int) -> float:
    g = GOLDEN
    return teacher_temperature(epoch, float(g["warmup_teacher_temp"]), float(g["teacher_temp"]),
                               int(g["warmup_teacher_temp_epochs"]))


def test_teacher_temperature_schedule_is_the_original_array():
    """linspace(0.04, 0.07, 30) then 0.07, for every one of the 100 epochs, in float64."""
    ours = torch.tensor([reference_temperature(e) for e in range(int(GOLDEN["nepochs"]))], dtype=torch.float64)
    assert_close(ours, golden("teacher_temp_schedule"), rtol=1e-10, atol=0.0)
    for call in (1, 2):
        assert reference_temperature(int(GOLDEN[f"epoch_{call}"])) == float(GOLDEN[f"teacher_temp_{call}"])


def test_loss_and_center_over_two_calls_carrying_the_center():
    """Call 2 starts from the center our own call 1 left; both losses and both centers match."""
    batch, crops, k = int(GOLDEN["batch"]), int(GOLDEN["ncrops"]), int(GOLDEN["out_dim"])
    loss_fn = DINOLoss(k, float(GOLDEN["student_temp"]), float(GOLDEN["center_momentum"]))
    assert_close(loss_fn.center.center, golden("center_0"), rtol=0, atol=0, check_dtype=False)
    for call in (1, 2):
        student = golden(f"student_output_{call}").float().reshape(crops, batch, k)
        teacher = golden(f"teacher_output_{call}").float().reshape(2, batch, k)
        loss = loss_fn(student, teacher, reference_temperature(int(GOLDEN[f"epoch_{call}"])))
        loss_fn.center.update()
        assert_close(loss, golden(f"loss_{call}"), **FP32)
        assert_close(loss_fn.center.center, golden(f"center_{call}"), **FP32)
