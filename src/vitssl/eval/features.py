"""Frozen-backbone feature extraction shared by k-NN, linear and dense evaluation."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    loader: DataLoader,
    device: torch.device | str,
    n_last_blocks: int = 1,
    avgpool_patchtokens: bool = False,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, F) float32 features and (N,) labels, on CPU, in loader order.

    n_last_blocks = 1 and no avgpool: the pooled token (CLS after the final norm). Otherwise
    DINO's linear-probe feature: the pooled tokens of the last n blocks (each through the final
    norm) concatenated, plus the mean last-block patch token with `avgpool_patchtokens`.
    """
    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    try:
        for images, targets in tqdm(loader, desc="features", disable=not progress, leave=False):
            images = images.to(device, non_blocking=True)
            if n_last_blocks == 1 and not avgpool_patchtokens:
                out = backbone(images).pooled
            else:
                blocks = backbone.last_blocks(images, n_last_blocks)
                parts = [t.pooled for t in blocks]
                if avgpool_patchtokens:
                    parts.append(blocks[-1].patches.mean(dim=1))
                out = torch.cat(parts, dim=-1)
            feats.append(out.float().cpu())
            labels.append(torch.as_tensor(targets).long().cpu())
    finally:
        backbone.train(was_training)
    return torch.cat(feats), torch.cat(labels)
