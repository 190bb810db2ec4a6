"""Looking inside pre-trained models: attention maps and statistics, layer similarity (CKA),
EsViT's region correspondence."""

from vitssl.analysis.attention_maps import attention_heatmaps, mass_mask, save_attention_maps
from vitssl.analysis.attention_stats import (
    attention_distance,
    attention_entropy,
    attention_statistics,
    grid_distances,
    patch_attention,
    plot_attention_stats,
)
from vitssl.analysis.cka import MinibatchCKA, cka_heatmap, cka_matrix, hsic1, layer_features
from vitssl.analysis.correspondence import analyze_correspondence

__all__ = [
    "MinibatchCKA",
    "analyze_correspondence",
    "attention_distance",
    "attention_entropy",
    "attention_heatmaps",
    "attention_statistics",
    "cka_heatmap",
    "cka_matrix",
    "grid_distances",
    "hsic1",
    "layer_features",
    "mass_mask",
    "patch_attention",
    "plot_attention_stats",
    "save_attention_maps",
]
