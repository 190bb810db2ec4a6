"""The one output type every backbone returns and every method reads."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Tokens:
    """Backbone output after the final norm.

    cls: (B, D) image token, or None for CLS-free backbones.
    patches: (B, N, D) patch (region) tokens, N = grid[0] * grid[1].
    grid: (h, w) layout of the patch tokens.
    """

    cls: torch.Tensor | None
    patches: torch.Tensor
    grid: tuple[int, int]

    @property
    def pooled(self) -> torch.Tensor:
        """(B, D) image-level feature: the CLS token, or the mean patch token without one."""
        return self.cls if self.cls is not None else self.patches.mean(dim=1)
