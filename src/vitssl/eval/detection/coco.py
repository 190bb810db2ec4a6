"""COCO-format detection data: checked on load, one line naming the file and entry on a fault.

`--train COCO_JSON:IMAGES` is the annotation file and the folder its `file_name`s are in.
Every annotation is checked before any training starts (its image exists, its box lies inside
that image and has an area, its category is declared, its mask is the image's size), so a
fault surfaces in seconds rather than hours into a run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from vitssl.data.datasets import to_rgb

BOX_TOLERANCE = 1.0  # pixels a box may reach past the image edge (COCO boxes are floats)


def require_pycocotools() -> Any:
    """pycocotools.mask, or a one-line error saying how to install it."""
    try:
        from pycocotools import mask
    except ImportError:
        raise RuntimeError("detection needs pycocotools: pip install 'vitssl[dense]'") from None
    return mask


def split_source(source: str) -> tuple[Path, Path]:
    """'ANNOTATIONS.json:IMAGES_FOLDER' -> the two paths (the last ':' separates them)."""
    if ":" not in source:
        raise ValueError(f"'{source}' is not COCO_JSON:IMAGES: pass the annotation file and the image folder, "
                         "e.g. annotations/instances_val2017.json:val2017")
    json_path, images = source.rsplit(":", 1)
    json_path, folder = Path(json_path), Path(images)
    if not json_path.is_file():
        raise FileNotFoundError(f"COCO annotation file '{json_path}' does not exist")
    if not folder.is_dir():
        raise FileNotFoundError(f"COCO image folder '{folder}' does not exist (from '{source}')")
    return json_path, folder


def _read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"'{path}' is not valid JSON ({str(e).splitlines()[0]}): pass a COCO annotation file") from None
    if not isinstance(doc, dict):
        raise ValueError(f"'{path}' holds a {type(doc).__name__}, not a COCO object with images/annotations/categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            raise ValueError(f"'{path}' has no '{key}' list: a COCO file needs images, annotations and categories")
    for key in ("images", "categories"):
        if not doc[key]:
            raise ValueError(f"'{path}' has empty '{key}': a detection set needs at least one of each")
    return doc


def _check_images(path: Path, folder: Path, images: list) -> dict[int, dict]:
    by_id: dict[int, dict] = {}
    for i, im in enumerate(images):
        if not isinstance(im, dict) or not all(k in im for k in ("id", "file_name", "width", "height")):
            raise ValueError(f"'{path}' images[{i}] lacks id, file_name, width or height")
        if im["id"] in by_id:
            raise ValueError(f"'{path}' images[{i}] repeats image id {im['id']}")
        if not (folder / im["file_name"]).is_file():
            raise FileNotFoundError(f"'{path}' image id {im['id']}: file '{folder / im['file_name']}' does not exist")
        by_id[im["id"]] = im
    return by_id


def _check_annotation(path: Path, ann: Any, i: int, images: dict[int, dict], categories: set) -> None:
    if not isinstance(ann, dict) or not all(k in ann for k in ("id", "image_id", "category_id", "bbox")):
        raise ValueError(f"'{path}' annotations[{i}] lacks id, image_id, category_id or bbox")
    where = f"'{path}' annotation id {ann['id']}"
    image = images.get(ann["image_id"])
    if image is None:
        raise ValueError(f"{where} names image_id {ann['image_id']}, which is not in images")
    if ann["category_id"] not in categories:
        raise ValueError(f"{where} has category_id {ann['category_id']}, which is not in categories")
    box = ann["bbox"]
    if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
        raise ValueError(f"{where} bbox {box!r} is not [x, y, width, height]")
    x, y, w, h = box
    if w <= 0 or h <= 0:
        raise ValueError(f"{where} bbox {box} has no area (width and height must be > 0)")
    if x < -BOX_TOLERANCE or y < -BOX_TOLERANCE or x + w > image["width"] + BOX_TOLERANCE \
            or y + h > image["height"] + BOX_TOLERANCE:
        raise ValueError(f"{where} bbox {box} lies outside its image ({image['width']}x{image['height']})")
    seg = ann.get("segmentation")
    if isinstance(seg, dict):
        size = seg.get("size")
        if list(size or []) != [image["height"], image["width"]]:
            raise ValueError(f"{where} mask size {size} does not match its image "
                             f"(height {image['height']}, width {image['width']})")
    elif not (isinstance(seg, list) and seg):
        raise ValueError(f"{where} has no segmentation (polygons or RLE): Mask R-CNN needs a mask per object")


@dataclass
class CocoSet:
    """A checked COCO file: its document, image folder, and category ids in label order (1..K)."""

    json_path: Path
    folder: Path
    doc: dict
    category_ids: list[int]

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    @property
    def category_names(self) -> list[str]:
        names = {c["id"]: c.get("name", str(c["id"])) for c in self.doc["categories"]}
        return [names[c] for c in self.category_ids]


def load_coco(source: str) -> CocoSet:
    """Read and check 'ANNOTATIONS.json:IMAGES'; every fault is one line naming file and entry."""
    json_path, folder = split_source(source)
    doc = _read_json(json_path)
    images = _check_images(json_path, folder, doc["images"])
    categories = {c.get("id") for c in doc["categories"] if isinstance(c, dict)}
    if None in categories:
        raise ValueError(f"'{json_path}' has a category without an id")
    for i, ann in enumerate(doc["annotations"]):
        _check_annotation(json_path, ann, i, images, categories)
    return CocoSet(json_path, folder, doc, sorted(categories))


def decode_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """(H, W) uint8 mask of COCO polygons, uncompressed or compressed RLE."""
    mask_api = require_pycocotools()
    if isinstance(segmentation, list):
        rle = mask_api.merge(mask_api.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask_api.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_api.decode(rle).astype(np.uint8)


class CocoDetection(Dataset):
    """Items: (3, H, W) float image in [0, 1] and a torchvision detection target (xyxy boxes,
    labels 1..K, (N, H, W) uint8 masks, image_id). Crowd annotations are left out of training,
    as in COCO's own protocol. `hflip` mirrors image, boxes and masks with probability 0.5;
    `jitter` (size, low, high) then applies large-scale jitter (`eval.detection.jitter`)."""

    def __init__(self, coco: CocoSet, hflip: bool = False, jitter: tuple[int, float, float] | None = None) -> None:
        self.coco, self.hflip, self.jitter = coco, hflip, jitter
        self.images = coco.doc["images"]
        self.labels = {c: i + 1 for i, c in enumerate(coco.category_ids)}
        self.by_image: dict[int, list[dict]] = {im["id"]: [] for im in self.images}
        for ann in coco.doc["annotations"]:
            if not ann.get("iscrowd", 0):
                self.by_image[ann["image_id"]].append(ann)

    def __len__(self) -> int:
        return len(self.images)

    def _image(self, info: dict) -> torch.Tensor:
        path = self.coco.folder / info["file_name"]
        with Image.open(path) as img:
            rgb = to_rgb(img)
            rgb.load()
        if (rgb.width, rgb.height) != (info["width"], info["height"]):
            raise ValueError(f"'{self.coco.json_path}' image id {info['id']}: '{path.name}' is {rgb.width}x{rgb.height} "
                             f"but the file says {info['width']}x{info['height']}: masks would not match the image")
        return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).float() / 255.0

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        info = self.images[index]
        image = self._image(info)
        h, w = info["height"], info["width"]
        anns = self.by_image[info["id"]]
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                              for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        masks = torch.from_numpy(np.stack([decode_mask(a["segmentation"], h, w) for a in anns])) if anns \
            else torch.zeros((0, h, w), dtype=torch.uint8)
        target = {"boxes": boxes, "labels": torch.tensor([self.labels[a["category_id"]] for a in anns], dtype=torch.int64),
                  "masks": masks, "image_id": torch.tensor(info["id"])}
        if self.hflip and torch.rand(()) < 0.5:
            image, masks = image.flip(-1), masks.flip(-1)
            boxes = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], dim=1)
            target.update(boxes=boxes, masks=masks)
        if self.jitter is not None:
            from vitssl.eval.detection.jitter import large_scale_jitter

            size, lo, hi = self.jitter
            image, target = large_scale_jitter(image, target, size, (lo, hi))
        return image, target


def collate(batch: list) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    return [x for x, _ in batch], [t for _, t in batch]
