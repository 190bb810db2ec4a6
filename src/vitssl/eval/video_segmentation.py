"""DINO's DAVIS-2017 video object segmentation by label propagation (DINO paper Sec. 4.2, Table 5; facebookresearch/dino eval_video_segmentation.py; SelfPatch paper Sec. 4).

Nothing is trained: every patch of a frame takes a weighted vote of the labels of its most
similar patches in the first frame (the given mask) and in the previous `n_last_frames` frames
(their own soft predictions), looking only within a spatial neighbourhood. How well that tracks
objects measures how much the frozen patch features say *which* object a patch belongs to.
J&F here is a simple re-implementation for quick checks; published numbers use the official
davis2017-evaluation tool (which also leaves out the last frame).
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from vitssl.augment.photometric import IMAGENET_MEAN, IMAGENET_STD, to_normalized_tensor
from vitssl.eval.segmentation import patch_feature_maps

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
Normalization = tuple[Sequence[float], Sequence[float]]  # (mean, std): the run's (`eval.pretrained.normalization`)
VOID = 255  # DAVIS: pixels not scored
_TARGET_CHUNK = 4096  # target patches per affinity block, bounding memory at 480p with patch 8


# -------------------------------------------------------------------------------- propagation

def neighbourhood_mask(grid: tuple[int, int], radius: int) -> torch.Tensor:
    """(N, N) bool, N = h*w: True where patches are at most `radius` apart in both row and
    column (a square window, as DINO's `restrict_neighborhood`); radius <= 0 allows all pairs."""
    h, w = grid
    if radius <= 0:
        return torch.ones(h * w, h * w, dtype=torch.bool)
    rows, cols = torch.arange(h).repeat_interleave(w), torch.arange(w).repeat(h)
    near_r = (rows[:, None] - rows[None, :]).abs() <= radius
    near_c = (cols[:, None] - cols[None, :]).abs() <= radius
    return near_r & near_c


def propagate_labels(target: torch.Tensor, sources: torch.Tensor, source_labels: torch.Tensor,
                     grid: tuple[int, int], topk: int = 5, radius: int = 12, temperature: float = 0.1,
                     neighbourhood: torch.Tensor | None = None) -> torch.Tensor:
    """Soft labels (C, N) of a target frame from T context frames.

    target (N, D) and sources (T, N, D) are patch features on the same grid, L2-normalised here;
    source_labels (T, C, N). For each target patch, the affinity to a source patch is the cosine
    similarity; only source patches inside the neighbourhood window count, and of those, across
    all T frames together, the `topk` most similar are kept. Their weights exp(cos / temperature)
    are normalised to sum to 1 (so a softmax over those k only, never over all patches), and the
    target's labels are the weighted sum of theirs. DINO uses temperature 0.1.
    """
    t, n, _ = sources.shape
    if target.shape[0] != n or source_labels.shape[0] != t or source_labels.shape[-1] != n:
        raise ValueError(f"shapes disagree: target {tuple(target.shape)}, sources {tuple(sources.shape)}, "
                         f"labels {tuple(source_labels.shape)}; expected (N, D), (T, N, D), (T, C, N)")
    if neighbourhood is None:
        neighbourhood = neighbourhood_mask(grid, radius).to(target.device)
    keys = F.normalize(sources.float(), dim=-1).reshape(t * n, -1)  # (T*N, D)
    queries = F.normalize(target.float(), dim=-1)
    labels = source_labels.float().permute(1, 0, 2).reshape(source_labels.shape[1], t * n)  # (C, T*N)
    k = min(topk, t * n)
    out = []
    for start in range(0, n, _TARGET_CHUNK):
        sim = keys @ queries[start:start + _TARGET_CHUNK].T  # (T*N, n_chunk)
        allowed = neighbourhood[start:start + _TARGET_CHUNK].T.repeat(t, 1)
        sim = sim.masked_fill(~allowed, float("-inf"))
        values, index = sim.topk(k, dim=0)  # (k, n_chunk)
        weights = torch.softmax(values / temperature, dim=0)  # = exp(cos/T) / sum over the k kept
        out.append((labels[:, index] * weights).sum(dim=1))  # (C, k, n_chunk) -> (C, n_chunk)
    return torch.cat(out, dim=1)


def to_frame_labels(soft: torch.Tensor, resized: tuple[int, int], original: tuple[int, int]) -> np.ndarray:
    """(C, h, w) soft labels -> (H, W) channel index at the original frame size.

    As DINO: bilinear upsampling to the resized frame, each channel min-max scaled to [0, 1]
    (so a small object is not drowned by the background's larger mass), argmax, then a
    nearest-neighbour resize to the original size.
    """
    up = F.interpolate(soft[None].float(), size=resized, mode="bilinear", align_corners=False)[0]
    low = up.amin(dim=(1, 2), keepdim=True)
    high = up.amax(dim=(1, 2), keepdim=True)
    scaled = torch.where(high > 0, (up - low) / (high - low).clamp(min=1e-12), up)
    index = scaled.argmax(0).to(torch.uint8).cpu().numpy()
    return np.asarray(Image.fromarray(index).resize(original[::-1], Image.Resampling.NEAREST))


# -------------------------------------------------------------------------------------- input

def list_frames(frames_dir: str | os.PathLike[str]) -> list[Path]:
    """Frame images of a sequence, sorted by name (DAVIS: 00000.jpg, 00001.jpg, ...)."""
    folder = Path(frames_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"frames folder '{folder}' does not exist: pass the folder of one sequence")
    frames = sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and not p.name.startswith("."))
    if not frames:
        raise ValueError(f"no .jpg/.png frames in '{folder}': pass the folder of one sequence's frames")
    return frames


def read_object_mask(path: str | os.PathLike[str]) -> tuple[np.ndarray, list[int] | None]:
    """(H, W) uint8 object ids of a palette (P) or greyscale (L) PNG, and its palette if any."""
    with Image.open(path) as img:
        if img.mode not in ("P", "L"):
            raise ValueError(f"mask '{path}' has mode {img.mode}: object masks must be palette (P) or "
                             "greyscale (L) PNGs of object ids, as DAVIS annotations are")
        return np.array(img, dtype=np.uint8), img.getpalette() if img.mode == "P" else None


def default_palette() -> list[int]:
    """The PASCAL VOC / DAVIS colour map: bits of the index spread over R, G, B from the top bit."""
    palette = []
    for i in range(256):
        rgb, c = [0, 0, 0], i
        for bit in range(8):
            for ch in range(3):
                rgb[ch] |= ((c >> ch) & 1) << (7 - bit)
            c >>= 3
        palette += rgb
    return palette


def feature_size(size: tuple[int, int], short_side: int | None, patch: int) -> tuple[int, int]:
    """(H, W) to run the backbone at: short side scaled to `short_side` (None: unchanged), aspect
    kept, each side rounded down to a multiple of the patch size."""
    h, w = size
    scale = 1.0 if short_side is None else short_side / min(h, w)
    return max(patch, round(h * scale) // patch * patch), max(patch, round(w * scale) // patch * patch)


def _frame_features(backbone: nn.Module, path: Path, resized: tuple[int, int], original: tuple[int, int],
                    device: torch.device, normalization: Normalization | None = None
                    ) -> tuple[torch.Tensor, tuple[int, int]]:
    """(N, D) last-layer patch features of one frame (resized to `resized`) and their grid."""
    with Image.open(path) as img:
        frame = img.convert("RGB")
    if (frame.height, frame.width) != original:
        raise ValueError(f"frame '{path.name}' is {frame.width}x{frame.height} but the first frame is "
                         f"{original[1]}x{original[0]}: every frame of a sequence must have the same size")
    mean, std = normalization or (IMAGENET_MEAN, IMAGENET_STD)
    x = to_normalized_tensor(frame.resize(resized[::-1], Image.Resampling.BILINEAR), mean, std)[None].to(device)
    maps = patch_feature_maps(backbone, x)[0]  # (D, h, w)
    return maps.flatten(1).T, (maps.shape[1], maps.shape[2])


# ------------------------------------------------------------------------------------ metrics

def region_similarity(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None) -> float:
    """DAVIS J: IoU of two boolean masks outside `void` pixels; 1 when both are empty."""
    if void is not None:
        pred, gt = pred & ~void, gt & ~void
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)


def _boundary(mask: torch.Tensor) -> torch.Tensor:
    """Mask pixels with a 8-neighbour outside the mask (the image border is not a boundary)."""
    eroded = -F.max_pool2d(-mask[None, None], 3, stride=1, padding=1)[0, 0]
    return (mask > 0) & (eroded == 0)


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation by a disk of `radius` pixels."""
    r = torch.arange(-radius, radius + 1, dtype=torch.float32)
    disk = ((r[:, None] ** 2 + r[None, :] ** 2) <= radius**2).float()
    return F.conv2d(mask.float()[None, None], disk[None, None], padding=radius)[0, 0] > 0


def boundary_f_measure(pred: np.ndarray, gt: np.ndarray, tolerance: int | None = None) -> float:
    """Simplified DAVIS F: contour precision/recall with a match tolerance in pixels.

    A predicted boundary pixel counts as correct when a ground-truth boundary pixel lies within
    `tolerance` (default DAVIS's ceil(0.008 x image diagonal), at least 1), and vice versa for
    recall. Both empty: 1; only one empty: 0.
    """
    if tolerance is None:
        tolerance = max(1, math.ceil(0.008 * math.hypot(*pred.shape)))
    pb = _boundary(torch.from_numpy(pred.astype(np.float32)))
    gb = _boundary(torch.from_numpy(gt.astype(np.float32)))
    n_pred, n_gt = int(pb.sum()), int(gb.sum())
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0 or n_gt == 0:
        return 0.0
    precision = int((pb & _dilate(gb, tolerance)).sum()) / n_pred
    recall = int((gb & _dilate(pb, tolerance)).sum()) / n_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def score_sequence(predictions: dict[str, np.ndarray], gt_dir: str | os.PathLike[str],
                   object_ids: list[int], first: str) -> dict[str, Any]:
    """J, F and J&F means over objects (each a mean over the scored frames, the first excluded)."""
    folder = Path(gt_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"ground-truth folder '{folder}' does not exist: pass the sequence's mask folder")
    scored = [s for s in predictions if s != first and (folder / f"{s}.png").is_file()]
    if not scored:
        raise ValueError(f"no ground-truth mask in '{folder}' matches a frame after the first: expected "
                         "<frame name>.png per frame")
    per_object: dict[str, dict[str, float]] = {str(i): {"J": 0.0, "F": 0.0} for i in object_ids}
    for stem in scored:
        gt, _ = read_object_mask(folder / f"{stem}.png")
        pred = predictions[stem]
        if gt.shape != pred.shape:
            raise ValueError(f"ground truth '{stem}.png' is {gt.shape[1]}x{gt.shape[0]} but the frame is "
                             f"{pred.shape[1]}x{pred.shape[0]}: masks must match their frame")
        void = gt == VOID
        for i in object_ids:
            per_object[str(i)]["J"] += region_similarity(pred == i, gt == i, void) / len(scored)
            per_object[str(i)]["F"] += boundary_f_measure((pred == i) & ~void, (gt == i) & ~void) / len(scored)
    j = float(np.mean([v["J"] for v in per_object.values()]))
    f = float(np.mean([v["F"] for v in per_object.values()]))
    return {"J_mean": j, "F_mean": f, "JF_mean": (j + f) / 2, "per_object": per_object,
            "scored_frames": len(scored)}


# --------------------------------------------------------------------------------- top level

def _device_of(backbone: nn.Module) -> torch.device:
    param = next(iter(backbone.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


@torch.no_grad()
def propagate_sequence(backbone: nn.Module, frames: list[Path], first_ids: np.ndarray,
                       short_side: int | None = 480, n_last_frames: int = 7, topk: int = 5,
                       size_mask_neighborhood: int = 12, temperature: float = 0.1,
                       progress: bool = False, normalization: Normalization | None = None
                       ) -> tuple[dict[str, np.ndarray], tuple[int, int]]:
    """Predicted object-id maps (at frame size) keyed by frame stem, and the feature grid.

    The first frame's ids become one-hot maps at feature resolution (nearest resize); each later
    frame is labelled from the first frame plus the soft predictions of up to `n_last_frames`
    preceding frames.
    """
    device = _device_of(backbone)
    with Image.open(frames[0]) as img:
        original = (img.height, img.width)
    if first_ids.shape != original:
        raise ValueError(f"first mask is {first_ids.shape[1]}x{first_ids.shape[0]} but the first frame is "
                         f"{original[1]}x{original[0]}: pass the mask of the first frame")
    resized = feature_size(original, short_side, int(getattr(backbone, "patch_size", 1)))
    first_feat, grid = _frame_features(backbone, frames[0], resized, original, device, normalization)
    ids = np.unique(first_ids)  # channel c <-> object id ids[c]; 0 is background
    small = np.asarray(Image.fromarray(first_ids).resize(grid[::-1], Image.Resampling.NEAREST))
    channel = torch.from_numpy(np.searchsorted(ids, small)).long().flatten().to(device)
    first_labels = F.one_hot(channel, len(ids)).T.float()  # (C, N)
    neighbourhood = neighbourhood_mask(grid, size_mask_neighborhood).to(device)
    recent: deque[tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=n_last_frames)
    predictions = {frames[0].stem: first_ids}
    for path in tqdm(frames[1:], desc="propagate", disable=not progress, leave=False):
        feat, _ = _frame_features(backbone, path, resized, original, device, normalization)
        context = [(first_feat, first_labels), *recent]
        soft = propagate_labels(feat, torch.stack([f for f, _ in context]), torch.stack([lab for _, lab in context]),
                                grid, topk, size_mask_neighborhood, temperature, neighbourhood)
        if n_last_frames > 0:
            recent.append((feat, soft))
        index = to_frame_labels(soft.reshape(len(ids), *grid), resized, original)
        predictions[path.stem] = ids[index].astype(np.uint8)
    return predictions, grid


def run_label_propagation(
    backbone: nn.Module, frames_dir: str | os.PathLike[str], first_mask: str | os.PathLike[str],
    out_dir: str | os.PathLike[str], gt_dir: str | os.PathLike[str] | None = None,
    short_side: int | None = 480, n_last_frames: int = 7, topk: int = 5, size_mask_neighborhood: int = 12,
    temperature: float = 0.1, device: torch.device | str | None = None, progress: bool = False,
    normalization: Normalization | None = None,
) -> dict[str, Any]:
    """Segment one sequence from its first-frame mask; write palette PNGs; score against `gt_dir`.

    The backbone runs frozen in eval mode on its own device (or is moved to `device`), on frames
    resized so the short side is `short_side` (DAVIS 480p) and normalised with the run's
    `normalization` (mean, std; ImageNet's when None). Predictions are written to
    `out_dir/<frame stem>.png` with the first mask's palette (DAVIS's colours otherwise).
    """
    if topk < 1 or n_last_frames < 0:
        raise ValueError(f"topk must be >= 1 and n_last_frames >= 0, got {topk} and {n_last_frames}")
    frames = list_frames(frames_dir)
    first_ids, palette = read_object_mask(first_mask)
    object_ids = [int(i) for i in np.unique(first_ids) if i not in (0, VOID)]
    if not object_ids:
        raise ValueError(f"first mask '{first_mask}' holds no object (only 0 and {VOID}): nothing to propagate")
    if device is not None:
        backbone.to(device)
    was_training = backbone.training
    backbone.eval()
    try:
        predictions, grid = propagate_sequence(backbone, frames, first_ids, short_side, n_last_frames, topk,
                                               size_mask_neighborhood, temperature, progress, normalization)
    finally:
        backbone.train(was_training)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stem, ids in predictions.items():
        image = Image.frombytes("P", (ids.shape[1], ids.shape[0]), np.ascontiguousarray(ids).tobytes())
        image.putpalette(palette or default_palette())
        image.save(out / f"{stem}.png")
    result: dict[str, Any] = {
        "frames": len(frames), "out_dir": str(out), "objects": object_ids, "feature_grid": list(grid),
        "settings": {"short_side": short_side, "n_last_frames": n_last_frames, "topk": topk,
                     "size_mask_neighborhood": size_mask_neighborhood, "temperature": temperature},
    }
    if gt_dir is not None:
        result.update(score_sequence(predictions, gt_dir, object_ids, frames[0].stem))
    return result
