"""Semantic segmentation: the linear probe on frozen patch features (`probe`), and Semantic FPN,
UperNet or linear heads fine-tuned with the backbone (`finetune`); shared data and metrics."""

from vitssl.eval.segmentation.data import (
    IMAGE_SUFFIXES,
    MASK_MODES,
    SPLIT_NAMES,
    SegmentationDataset,
    build_segmentation_dataset,
    read_label_map,
    reduce_zero,
    shapes_segmentation,
)
from vitssl.eval.segmentation.metrics import confusion_matrix, segmentation_metrics
from vitssl.eval.segmentation.probe import (
    PatchFeatures,
    SegmentationProbeResult,
    extract_patch_features,
    patch_feature_maps,
    probe_confusion,
    run_segmentation_probe,
    train_segmentation_probe,
)

__all__ = ["IMAGE_SUFFIXES", "MASK_MODES", "SPLIT_NAMES", "PatchFeatures", "SegmentationDataset",
           "SegmentationProbeResult", "build_segmentation_dataset", "confusion_matrix", "extract_patch_features",
           "patch_feature_maps", "probe_confusion", "read_label_map", "reduce_zero", "run_segmentation_probe",
           "segmentation_metrics", "shapes_segmentation", "train_segmentation_probe"]
