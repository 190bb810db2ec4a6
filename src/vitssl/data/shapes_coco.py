"""Built-in detection set: several shapes per image, each its own instance, in COCO format.

The classification set (`builtin.py`) has one shape per image and a class map; detection and
instance segmentation need a box, a mask and a category per object. This draws 1 to
`max_shapes` non-overlapping shapes per image with the same shape masks, colours and textures,
and writes them as COCO JSON (uncompressed RLE masks) plus an image folder, so
`vitssl eval detection` reads it exactly as it reads COCO.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vitssl.data.builtin import SHAPE_CLASSES, _contrasting_colour, _shape_mask
from vitssl.engine.outputs import check_output_dir, write_text_atomic


@dataclass
class ShapeInstance:
    """One object: category index into SHAPE_CLASSES and its (H, W) boolean mask."""

    category: int
    mask: np.ndarray


def _background(rng: np.random.Generator, size: int, yy: np.ndarray, xx: np.ndarray) -> tuple[np.ndarray, list]:
    noise = rng.normal(0, 10, (size, size, 3))
    if rng.random() < 0.5:
        c0 = rng.uniform(0, 255, 3)
        return c0 + noise, [c0]
    c0, c1 = rng.uniform(0, 255, (2, 3))
    theta = rng.uniform(0, 2 * np.pi)
    t = np.cos(theta) * xx + np.sin(theta) * yy
    t = ((t - t.min()) / (t.max() - t.min()))[..., None]
    return c0 * (1 - t) + c1 * t + noise, [c0, c1, (c0 + c1) / 2]


def _place(rng: np.random.Generator, kind: int, size: int, occupied: np.ndarray, yy: np.ndarray,
           xx: np.ndarray) -> np.ndarray | None:
    """A shape mask that touches no pixel of `occupied` (one pixel of margin), or None."""
    grown = occupied.copy()
    grown[1:] |= occupied[:-1]
    grown[:-1] |= occupied[1:]
    grown[:, 1:] |= occupied[:, :-1]
    grown[:, :-1] |= occupied[:, 1:]
    for _ in range(30):
        r = rng.uniform(0.12, 0.3) * size
        cy, cx = rng.uniform(r, size - r, 2)
        a = rng.uniform(0, 2 * np.pi)
        u = np.cos(a) * (xx - cx) + np.sin(a) * (yy - cy)
        v = -np.sin(a) * (xx - cx) + np.cos(a) * (yy - cy)
        m = _shape_mask(kind, u, v, r)
        if m.sum() >= 9 and not (m & grown).any():
            return m
    return None


def shapes_scene(rng: np.random.Generator, size: int = 64, max_shapes: int = 3) -> tuple[np.ndarray, list[ShapeInstance]]:
    """One (size, size, 3) uint8 image with 1..max_shapes separate shapes and their instances."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    image, avoid = _background(rng, size, yy, xx)
    occupied = np.zeros((size, size), dtype=bool)
    instances: list[ShapeInstance] = []
    for kind in rng.integers(0, len(SHAPE_CLASSES), int(rng.integers(1, max_shapes + 1))).tolist():
        m = _place(rng, kind, size, occupied, yy, xx)
        if m is None:
            continue
        fg = np.broadcast_to(_contrasting_colour(rng, avoid), (size, size, 3)) + rng.normal(0, 8, (size, size, 3))
        image = np.where(m[..., None], fg, image)
        occupied |= m
        instances.append(ShapeInstance(kind, m))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), instances


def mask_to_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths over the column-major pixels, starting with a 0-run."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def mask_box(mask: np.ndarray) -> list[float]:
    """COCO [x, y, width, height] of the pixels in `mask` (pixel edges, not centres)."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]), float(rows[-1] + 1 - rows[0])]


def coco_document(scenes: list[tuple[str, list[ShapeInstance]]], size: int) -> dict:
    """COCO JSON for (file name, instances) pairs of size x size images; categories 1..5."""
    images, annotations = [], []
    for image_id, (name, instances) in enumerate(scenes, start=1):
        images.append({"id": image_id, "file_name": name, "width": size, "height": size})
        for inst in instances:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": inst.category + 1,
                                "bbox": mask_box(inst.mask), "area": float(inst.mask.sum()), "iscrowd": 0,
                                "segmentation": mask_to_rle(inst.mask)})
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(SHAPE_CLASSES)]
    return {"images": images, "annotations": annotations, "categories": categories}


SPLIT_SEEDS = {"train": 1, "val": 2}  # the val images never depend on the train count


def write_shapes_coco(out_dir: str | Path, train_images: int = 200, val_images: int = 50, size: int = 64,
                      max_shapes: int = 3, seed: int = 0, overwrite: bool = False) -> dict[str, str]:
    """Write OUT/{train,val}.json and OUT/{train,val}/NNNNN.png; returns the --train/--val arguments."""
    out = check_output_dir(out_dir, overwrite, ("train.json", "val.json", "train/*.png", "val/*.png"))
    written = {}
    for split, n in (("train", train_images), ("val", val_images)):
        rng = np.random.default_rng([seed, SPLIT_SEEDS[split], 0xC0C0])
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        scenes = []
        for i in range(n):
            image, instances = shapes_scene(rng, size, max_shapes)
            name = f"{i:05d}.png"
            Image.fromarray(image).save(folder / name)
            scenes.append((name, instances))
        write_text_atomic(out / f"{split}.json", json.dumps(coco_document(scenes, size)))
        written[split] = f"{out / f'{split}.json'}:{folder}"
    return written
