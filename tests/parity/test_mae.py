"""MAE's patchify/unpatchify, masking and loss against the original `models_mae.py`'s outputs.

tests/fixtures/parity/mae_loss.npz: 4 images of 20x20, patch 4 (25 patches of 48 values), mask
ratio 0.75. The tensor utilities run in float64 and must match exactly; the loss computes in
float32 (rtol 1e-5); the masking uses the noise the original drew, passed as `noise=`.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from vitssl.losses.mae import MAELoss, num_visible, patchify, random_masking, unpatchify

GOLDEN = np.load(Path(__file__).resolve().parents[1] / "fixtures" / "parity" / "mae_loss.npz")
FP32 = dict(rtol=1e-5, atol=0.0, check_dtype=False)
P = int(GOLDEN["patch_size"])
GRID = (int(GOLDEN["img_size"]) // P,) * 2


def golden(name: str) -> torch.Tensor:
    return torch.from_numpy(GOLDEN[name])


def test_patchify_and_unpatchify_are_the_originals():
    """Each patch vector is (row in patch, column in patch, channel), channel fastest."""
    assert torch.equal(patchify(golden("imgs"), P), golden("patchify_imgs"))
    assert torch.equal(unpatchify(patchify(golden("imgs"), P), P, GRID), golden("unpatchify_patchify_imgs"))
    assert torch.equal(unpatchify(golden("pred"), P, GRID), golden("unpatchify_pred"))


def test_masking_from_the_originals_noise():
    """Same kept tokens in the same order, same float32 mask, same restore indices."""
    noise, x = golden("masking_noise"), golden("masking_x")
    batch, length = noise.shape
    assert num_visible(length, float(GOLDEN["mask_ratio"])) == int(GOLDEN["len_keep"])
    ids_keep, mask, ids_restore = random_masking(batch, length, float(GOLDEN["mask_ratio"]), noise=noise)
    kept = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))  # as ViT.forward_masked
    assert torch.equal(kept, golden("masking_x_masked"))
    assert mask.dtype == torch.float32 and torch.equal(mask, golden("masking_mask"))
    assert torch.equal(ids_restore, golden("masking_ids_restore"))


def test_given_noise_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match="masking noise has shape"):
        random_masking(4, 25, 0.75, noise=golden("masking_noise")[:, :24])


@pytest.mark.parametrize("norm_pix, mask, expected", [
    (True, "mask", "loss_norm_pix"), (False, "mask", "loss_raw"), (True, None, "loss_norm_pix_all_masked")])
def test_loss_is_the_originals(norm_pix, mask, expected):
    """Unbiased per-patch variance + 1e-6 under the root; only removed patches count."""
    pred, imgs = golden("pred").float(), golden("imgs").float()
    mask = golden(mask) if mask else torch.ones(pred.shape[:2])
    loss = MAELoss(P, norm_pix_loss=norm_pix)(pred, imgs, mask)
    assert_close(loss, golden(expected), **FP32)
