"""Random patch masking (MAE's `random_masking`, MAE paper Sec. 3; facebookresearch/mae models_mae.py): which patches the encoder sees.

One function shared by MAE and D-MAE-Lite: `ids_keep` picks the visible patches (the encoder's
input order), `ids_restore` puts the decoder's tokens back in patch order, and `mask` marks the
patches the loss counts.
"""

from __future__ import annotations

import math

import torch


def num_visible(num_patches: int, mask_ratio: float) -> int:
    """Patches kept per sample: floor(L * (1 - r)), as MAE's `int(L * (1 - mask_ratio))`.

    A 1e-6 guard keeps float round-off (e.g. 10 * (1 - 0.9) = 0.99999...) from dropping a patch.
    """
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask ratio must lie in [0, 1), got {mask_ratio}")
    return math.floor(num_patches * (1.0 - mask_ratio) + 1e-6)


def random_masking(
    batch: int,
    num_patches: int,
    mask_ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample random masking by argsort of uniform noise (MAE's `random_masking`).

    Returns
    - `ids_keep` (B, n_keep) long: indices of the visible patches, in shuffled order;
    - `mask` (B, L) float: 0 for visible, 1 for masked, in the original patch order;
    - `ids_restore` (B, L) long: `gather(shuffled, 1, ids_restore)` puts shuffled tokens
      (visible first, then masked) back in patch order.
    The noise is drawn from `generator` when given (on its own device, then moved to
    `device`), else from torch's global generator on `device`; a given `noise` (B, L) is used
    as is instead (the lowest values are kept), which makes a mask reproducible from outside.
    """
    keep = num_visible(num_patches, mask_ratio)
    if noise is None:
        noise = torch.rand(batch, num_patches, generator=generator,
                           device=generator.device if generator is not None else device)
    elif noise.shape != (batch, num_patches):
        raise ValueError(f"masking noise has shape {tuple(noise.shape)}, expected ({batch}, {num_patches})")
    if device is not None:
        noise = noise.to(device)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(batch, num_patches, device=noise.device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return ids_shuffle[:, :keep], mask, ids_restore
