"""Frozen-backbone feature extraction shared by the k-NN and linear protocols (DINO, DINO paper Sec. 3.2; facebookresearch/dino eval_knn.py, eval_linear.py).

Both DINO protocols read features of a frozen backbone in eval mode: k-NN uses the CLS token
after the final norm; the linear probe uses the CLS tokens of the last n blocks (each through
the final norm), optionally with the mean last-block patch token. Extracting them once and
training on the cached tensors is what makes the evaluations cheap.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from vitssl.augment import EvalTransform
from vitssl.augment.photometric import IMAGENET_MEAN, IMAGENET_STD
from vitssl.data import BUILTIN_DATASETS, build_dataset, report_skips
from vitssl.distributed import gather_rank_shards, rank, world_size
from vitssl.engine.wording import counted


def _block_features(backbone: nn.Module, images: torch.Tensor, n_last_blocks: int,
                    avgpool_patchtokens: bool) -> torch.Tensor:
    """(B, F) feature of one batch; see `extract_features` for the layout."""
    if n_last_blocks == 1 and not avgpool_patchtokens:
        return backbone(images).pooled
    blocks = backbone.last_blocks(images, n_last_blocks)
    if len(blocks) != n_last_blocks:
        raise ValueError(f"n_last_blocks={n_last_blocks} but the backbone returned {counted(len(blocks), 'block')} "
                         f"(is it deeper than {len(blocks)}?)")
    parts = [t.pooled for t in blocks]
    if avgpool_patchtokens:
        parts.append(blocks[-1].patches.mean(dim=1))
    return torch.cat(parts, dim=-1)


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    loader: Iterable[tuple[torch.Tensor, Any]],
    device: torch.device | str,
    n_last_blocks: int = 1,
    avgpool_patchtokens: bool = False,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, F) float32 features and (N,) int64 labels, both on CPU, in loader order.

    The backbone must already be on `device` (it is not moved); images are. It runs in eval
    mode (no drop-path, as DINO evaluates a frozen network) and its previous training mode is
    restored afterwards, also on error.

    Feature layout, D = backbone.embed_dim:
    - n_last_blocks == 1, no avgpool: `Tokens.pooled` (CLS after the final norm) -> D; DINO k-NN.
    - otherwise: the pooled token of each of the last n blocks (each through the final norm),
      oldest first -> n*D (DINO ViT-S linear: n = 4), then with `avgpool_patchtokens` the mean
      of the last block's patch tokens -> (n+1)*D (DINO ViT-B linear: n = 1 -> 2D). DINO
      interleaves CLS and average channel-wise; ours is a fixed permutation of that, which a
      linear probe cannot tell apart.
    """
    if n_last_blocks < 1:
        raise ValueError(f"n_last_blocks must be >= 1, got {n_last_blocks}")
    was_training = backbone.training
    backbone.eval()
    feats: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    try:
        for images, targets in tqdm(loader, desc="features", disable=not progress, leave=False):
            images = images.to(device, non_blocking=True)
            out = _block_features(backbone, images, n_last_blocks, avgpool_patchtokens)
            feats.append(out.float().cpu())
            labels.append(torch.as_tensor(targets).reshape(-1).long().cpu())
    finally:
        backbone.train(was_training)
    if not feats:
        raise ValueError("the loader yielded no batches: nothing to extract features from")
    return torch.cat(feats), torch.cat(labels)


def rank_shard(dataset: Dataset) -> Dataset:
    """This rank's share of `dataset` for feature extraction: items rank, rank + W, ...

    Every item is read by exactly one rank (no padding, unlike DistributedSampler, so nothing
    is counted twice); `gather_features` puts the rows back in dataset order.
    """
    if world_size() == 1:
        return dataset
    return Subset(dataset, range(rank(), len(dataset), world_size()))  # type: ignore[arg-type]


def gather_features(feats: torch.Tensor, labels: torch.Tensor, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's `rank_shard` features and labels, gathered on every rank in dataset order."""
    return gather_rank_shards(feats, total), gather_rank_shards(labels, total)


class _Transformed(Dataset):
    def __init__(self, base: Dataset, transform: Any) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image, label = self.base[i]
        return self.transform(image), label


def eval_transform(source: str, image_size: int, resize_size: int | None = None,
                   normalization: tuple[Sequence[float], Sequence[float]] | None = None) -> EvalTransform:
    """DINO's Resize(size x 256/224) + CenterCrop(size) for image folders; built-in sets are
    already at their training resolution, so they are only resized to `image_size`.
    `normalization`: the (mean, std) the run trained with (`vitssl.eval.pretrained.normalization`);
    None: ImageNet's."""
    if resize_size is None and source in BUILTIN_DATASETS:
        resize_size = image_size
    mean, std = normalization or (IMAGENET_MEAN, IMAGENET_STD)
    return EvalTransform(image_size, resize_size, mean, std)


def labelled_features(
    backbone: nn.Module, source: str, split: str, image_size: int, device: torch.device,
    batch_size: int = 256, num_workers: int = 4, n_last_blocks: int = 1, avgpool_patchtokens: bool = False,
    resize_size: int | None = None, normalization: tuple[Sequence[float], Sequence[float]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Features and labels of a labelled data set (ImageFolder layout or a built-in set), its
    images normalised with `normalization` (the run's (mean, std); None: ImageNet's)."""
    dataset = build_dataset(source, split=split)
    if getattr(dataset, "num_classes", 0) < 2:
        raise ValueError(f"'{source}' has no class sub-folders: evaluation needs an ImageFolder layout with labels")
    transform = eval_transform(source, image_size, resize_size, normalization)
    # Its own generator: a DataLoader iterator otherwise draws its base seed from torch's global
    # one, and an evaluation in the middle of a run (online k-NN, a demo's random-init row)
    # would change what the run trains next. Under torchrun each rank reads 1/W.
    loader = DataLoader(rank_shard(_Transformed(dataset, transform)), batch_size=batch_size,
                        num_workers=num_workers, shuffle=False, generator=torch.Generator())
    feats, labels = extract_features(backbone.to(device), loader, device, n_last_blocks=n_last_blocks,
                                     avgpool_patchtokens=avgpool_patchtokens)
    feats, labels = gather_features(feats, labels, len(dataset))
    report_skips(dataset)
    return feats, labels, int(dataset.num_classes)
