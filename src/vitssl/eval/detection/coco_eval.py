"""COCO AP with pycocotools' own evaluator, for boxes and masks.

Predictions are turned into COCO result entries (xywh boxes, RLE masks thresholded at 0.5,
category ids mapped back from labels) and scored by `COCOeval`, the evaluator the COCO
leaderboard and the papers use, so the numbers are comparable with theirs.
"""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Any

import numpy as np
import torch

from vitssl.eval.detection.coco import CocoSet, require_pycocotools

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # COCOeval.stats[0:6]


def prediction_entries(image_id: int, prediction: dict[str, torch.Tensor], category_ids: list[int]) -> list[dict]:
    """COCO result entries of one image's torchvision prediction (boxes xyxy, labels 1..K,
    scores, masks (N, 1, H, W) probabilities)."""
    mask_api = require_pycocotools()
    boxes = prediction["boxes"].detach().float().cpu()
    entries = []
    masks = prediction.get("masks")
    for i in range(len(boxes)):
        x0, y0, x1, y1 = boxes[i].tolist()
        entry = {"image_id": int(image_id), "category_id": int(category_ids[int(prediction["labels"][i]) - 1]),
                 "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(prediction["scores"][i])}
        if masks is not None:
            binary = (masks[i, 0] > 0.5).cpu().numpy().astype(np.uint8)
            rle = mask_api.encode(np.asfortranarray(binary))
            rle["counts"] = rle["counts"].decode("ascii")
            entry["segmentation"] = rle
        entries.append(entry)
    return entries


def _ground_truth(coco: CocoSet) -> Any:
    require_pycocotools()
    from pycocotools.coco import COCO

    gt = COCO()
    doc = copy.deepcopy(coco.doc)
    for ann in doc["annotations"]:  # COCOeval reads these; files from other tools may omit them
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
    gt.dataset = doc
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def coco_ap(coco: CocoSet, entries: list[dict], iou_types: tuple[str, ...] = ("bbox", "segm")) -> dict[str, dict]:
    """{'bbox': {AP, AP50, AP75, APs, APm, APl}, 'segm': {...}} as fractions; -1 where COCO has
    nothing to score (e.g. no large objects), 0 everywhere when there is no prediction."""
    from pycocotools.cocoeval import COCOeval

    gt = _ground_truth(coco)
    out: dict[str, dict] = {}
    for iou_type in iou_types:
        usable = [e for e in entries if iou_type == "bbox" or "segmentation" in e]
        if not usable:
            out[iou_type] = dict.fromkeys(METRICS, 0.0)
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            dt = gt.loadRes(copy.deepcopy(usable))
            evaluator = COCOeval(gt, dt, iou_type)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        out[iou_type] = {k: float(v) for k, v in zip(METRICS, evaluator.stats[:6])}
    return out
