"""The raw-pixel baseline every frozen-feature result is read against.

A k-NN or linear probe on pre-trained features means little until it is compared with the same
protocol on the pixels themselves (the same resize, crop and normalisation, flattened): on small
data sets a short pre-training can land below them, and a user should see that at once.
"""

from __future__ import annotations

import torch
from torch import nn

from vitssl.backbones.tokens import Tokens


class RawPixels(nn.Module):
    """A "backbone" whose feature is the normalised image, flattened: (B, 3, H, W) -> (B, 3HW).

    It has the backbone interface the evaluations use (`forward` -> Tokens, `last_blocks`, an
    `embed_dim` fixed by the image size), so every protocol runs on it unchanged.
    """

    def __init__(self, image_size: int) -> None:
        super().__init__()
        self.embed_dim = 3 * image_size * image_size

    def forward(self, images: torch.Tensor) -> Tokens:
        flat = images.flatten(1).float()
        return Tokens(cls=flat, patches=flat[:, None, :], grid=(1, 1))

    def last_blocks(self, images: torch.Tensor, n: int) -> list[Tokens]:
        """The pixels are the only "block": asked for more than one, they are repeated n times so a
        multi-block linear probe sees the same information as from one."""
        return [self(images)] * n
