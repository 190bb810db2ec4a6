"""Evaluation of frozen backbones with DINO's protocols (spec 1.6): feature extraction, weighted
k-NN and a linear probe on cached features."""

from vitssl.eval.features import extract_features
from vitssl.eval.knn import format_knn_table, knn_classify
from vitssl.eval.linear import LinearProbeResult, train_linear_probe

__all__ = ["LinearProbeResult", "extract_features", "format_knn_table", "knn_classify", "train_linear_probe"]
