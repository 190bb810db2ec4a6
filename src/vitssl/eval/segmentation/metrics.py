"""Semantic-segmentation scores: confusion matrix, mIoU, pixel and mean class accuracy (mmseg's
definitions)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def confusion_matrix(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray,
                     num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """(C, C) int64 pixel counts, rows = ground truth, columns = prediction.

    Pixels whose target is `ignore_index` are not counted; any other label outside [0, C) is an
    error rather than silently dropped.
    """
    pred, target = torch.as_tensor(pred).long(), torch.as_tensor(target).long()
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    keep = target != ignore_index
    p, t = pred[keep], target[keep]
    for name, v in (("target", t), ("prediction", p)):
        if v.numel() and (int(v.min()) < 0 or int(v.max()) >= num_classes):
            raise ValueError(f"{name} labels must lie in [0, {num_classes}) or be {ignore_index} (ignored), "
                             f"got [{int(v.min())}, {int(v.max())}]: check num_classes and ignore_index")
    return torch.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def segmentation_metrics(confusion: torch.Tensor) -> dict[str, Any]:
    """mIoU, pixel accuracy, mean class accuracy and per-class IoU from a confusion matrix.

    IoU_c = TP / (GT_c + Pred_c - TP). mIoU averages over the classes present in the ground
    truth or the prediction; a class absent from both has no IoU (None) and is left out, as
    mmseg's nanmean does. A class only predicted counts with IoU 0.
    """
    conf = torch.as_tensor(confusion).double()
    total = conf.sum()
    if total == 0:
        raise ValueError("the confusion matrix is empty: no labelled pixels were scored (all ignore_index?)")
    tp, gt, pred = conf.diag(), conf.sum(1), conf.sum(0)
    union = gt + pred - tp
    present = union > 0
    iou = tp / union.clamp(min=1)
    return {
        "miou": float(iou[present].mean()),
        "pixel_acc": float(tp.sum() / total),
        "mean_acc": float((tp / gt.clamp(min=1))[gt > 0].mean()),
        "per_class_iou": [float(v) if ok else None for v, ok in zip(iou.tolist(), present.tolist())],
    }
