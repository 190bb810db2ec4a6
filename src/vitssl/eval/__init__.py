"""Evaluation of frozen backbones with DINO's protocols (spec 1.6): feature extraction, weighted
k-NN and a linear probe on cached features."""

from vitssl.eval.features import extract_features
from vitssl.eval.knn import format_knn_table, knn_classify
from vitssl.eval.linear import LinearProbeResult, train_linear_probe
from vitssl.eval.segmentation import (
    SegmentationDataset,
    confusion_matrix,
    extract_patch_features,
    run_segmentation_probe,
    segmentation_metrics,
    shapes_segmentation,
    train_segmentation_probe,
)
from vitssl.eval.video_segmentation import (
    neighbourhood_mask,
    propagate_labels,
    run_label_propagation,
)

__all__ = ["LinearProbeResult", "extract_features", "format_knn_table", "knn_classify", "train_linear_probe",
           "SegmentationDataset", "confusion_matrix", "extract_patch_features", "run_segmentation_probe",
           "segmentation_metrics", "shapes_segmentation", "train_segmentation_probe",
           "neighbourhood_mask", "propagate_labels", "run_label_propagation"]
