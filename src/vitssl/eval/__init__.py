"""Evaluation of pre-trained backbones: DINO's frozen-feature protocols (DINO paper Sec. 3.2; facebookresearch/dino eval_knn.py, eval_linear.py: feature
extraction, weighted k-NN, a linear probe on cached features, optionally with MAE's BatchNorm),
dense probes, and end-to-end fine-tuning with layer-wise lr decay (MAE paper App. A.1, Tables 9-10; facebookresearch/mae FINETUNE.md; wangsr126/mae-lite projects/eval_tools/finetuning_exp.py)."""

from vitssl.eval.features import extract_features
from vitssl.eval.finetune import (
    RECIPES,
    Classifier,
    FinetuneRecipe,
    FinetuneResult,
    finetune_backbone,
    resolve_recipe,
)
from vitssl.eval.knn import format_knn_table, knn_classify
from vitssl.eval.linear import BatchNormLinear, LinearProbeResult, train_linear_probe
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

__all__ = ["BatchNormLinear", "Classifier", "FinetuneRecipe", "FinetuneResult", "RECIPES", "finetune_backbone",
           "resolve_recipe", "LinearProbeResult", "extract_features", "format_knn_table", "knn_classify", "train_linear_probe",
           "SegmentationDataset", "confusion_matrix", "extract_patch_features", "run_segmentation_probe",
           "segmentation_metrics", "shapes_segmentation", "train_segmentation_probe",
           "neighbourhood_mask", "propagate_labels", "run_label_propagation"]
