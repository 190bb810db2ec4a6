"""Multi-crop view bookkeeping shared by the methods."""

from __future__ import annotations

import torch


def resolution_groups(views: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Split a list of (B, 3, S, S) views into runs of consecutive equal sizes.

    Each run is one backbone call, as in DINO's MultiCropWrapper: batching equal crops is what
    makes multi-crop cheap, and keeping the order keeps view v at position v.
    """
    groups: list[list[torch.Tensor]] = []
    for view in views:
        if groups and groups[-1][0].shape[-2:] == view.shape[-2:]:
            groups[-1].append(view)
        else:
            groups.append([view])
    return groups
