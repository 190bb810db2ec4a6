"""SimMIM's masked pixel regression (Xie et al., CVPR 2022, "SimMIM: a Simple Framework for
Masked Image Modeling", Sec. 3, Eq. 1; microsoft/SimMIM simmim.py): the L1 distance between the
predicted and the input's pixel values, averaged over the masked pixels only.

    L_pix = 1 / Omega(x_M) * || y_M - x_M ||_1

x_M and y_M are the input's and the prediction's values (every channel) at the masked pixels,
Omega(x_M) the number of those values: #masked pixels x C. The original computes the same as
`(|x - y| * mask).sum() / mask.sum() / C` with a one-channel pixel mask. Here a pixel is masked
when its patch is, so Omega = #masked patches x p*p*C; a batch with nothing masked gives 0.
"""

from __future__ import annotations

import torch


def masked_pixel_l1(pred: torch.Tensor, target: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """pred, target (B, N, p*p*C) per patch; masks (B, N) bool, True = masked -> scalar L_pix,
    in fp32 whatever the autocast dtype. Unmasked patches add nothing, not even a gradient."""
    if pred.shape != target.shape or masks.shape != pred.shape[:-1]:
        raise ValueError(f"prediction {tuple(pred.shape)}, target {tuple(target.shape)} and masks "
                         f"{tuple(masks.shape)} must cover the same images and patches")
    weight = masks.unsqueeze(-1).to(torch.float32)
    error = (pred.float() - target.float()).abs() * weight
    return error.sum() / (weight.sum() * pred.shape[-1]).clamp_min(1.0)
