"""Multi-crop view bookkeeping shared by the methods."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


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


def concat_views(group: list[torch.Tensor]) -> torch.Tensor:
    """`torch.cat(group)` of equal-size views, without a copy when they already lie back to back.

    The device-side multi-crop renders all views of one size as one tensor and hands them out
    as its slices; the teacher (global views) and the student (all views) would otherwise copy
    them together again every step (~200 MB at batch 64 for DINO's 2 x 224^2 + 10 x 96^2 views).
    A compiled step keeps `torch.cat`, which the compiler may plan away itself.
    """
    first = group[0]
    step = first.numel()
    if torch.compiler.is_compiling() or first.requires_grad:
        return torch.cat(group)
    if len(group) > 1 and first.is_contiguous() and all(
        v.is_contiguous() and v.shape == first.shape and v.dtype == first.dtype
        and v.untyped_storage().data_ptr() == first.untyped_storage().data_ptr()
        and v.storage_offset() == first.storage_offset() + i * step
        for i, v in enumerate(group)
    ):
        whole = torch.empty(0, dtype=first.dtype, device=first.device)
        return whole.set_(first.untyped_storage(), first.storage_offset(),
                          (len(group) * first.shape[0], *first.shape[1:]))
    return torch.cat(group)


def resolution_batches(views: list[torch.Tensor]) -> list[torch.Tensor]:
    """One (V_g B, 3, S, S) batch per run of equal-size views: the backbone calls of a step."""
    return [concat_views(group) for group in resolution_groups(views)]


def encode_by_resolution(backbone: nn.Module, views: list[torch.Tensor]) -> list[Any]:
    """The backbone's `Tokens` per run of equal-size views, each (V_g * B, T_g, C), views in order."""
    return [backbone(batch) for batch in resolution_batches(views)]
