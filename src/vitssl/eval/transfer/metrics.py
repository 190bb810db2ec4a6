"""The official metric of each downstream set, from class scores (CLIP, Table 9; ELEVATER, Table 1):
top-1 accuracy, mean per-class accuracy (Caltech-101, FGVC-Aircraft, Flowers, Pets), 11-point
mean average precision (VOC-2007) and ROC AUC (Hateful-Memes, two classes)."""

from __future__ import annotations

import numpy as np

from vitssl.eval.transfer.registry import MAP11, MEAN_PER_CLASS, ROC_AUC, TOP1

METRIC_NAMES = {TOP1: "top-1", MEAN_PER_CLASS: "mean per-class", MAP11: "11-point mAP", ROC_AUC: "ROC AUC"}


def top1(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(scores.argmax(axis=1) == labels))


def mean_per_class(scores: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of each class present in `labels`, averaged: every class weighs the same."""
    hits = scores.argmax(axis=1) == labels
    return float(np.mean([hits[labels == c].mean() for c in np.unique(labels)]))


def average_precision_11(scores: np.ndarray, positive: np.ndarray) -> float:
    """PASCAL VOC 2007's 11-point interpolated AP of one class."""
    order = np.argsort(-scores, kind="stable")
    hits = positive[order].astype(np.float64)
    if hits.sum() == 0:
        return 0.0
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    recall = np.cumsum(hits) / hits.sum()
    return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0
                          for t in np.linspace(0, 1, 11)]))


def map11(scores: np.ndarray, labels: np.ndarray) -> float:
    """11-point AP per class (one-vs-rest on the single labels), averaged over classes present."""
    return float(np.mean([average_precision_11(scores[:, c], labels == c) for c in np.unique(labels)]))


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if scores.shape[1] != 2:
        raise ValueError(f"ROC AUC is for two classes, this set has {scores.shape[1]}: check its class folders")
    return float(roc_auc_score(labels, scores[:, 1]))


SCORERS = {TOP1: top1, MEAN_PER_CLASS: mean_per_class, MAP11: map11, ROC_AUC: roc_auc}


def score(metric: str, scores: np.ndarray, labels: np.ndarray) -> float:
    """`metric` of (N, K) class scores (probabilities or logits) against (N,) labels."""
    return SCORERS[metric](np.asarray(scores), np.asarray(labels))
