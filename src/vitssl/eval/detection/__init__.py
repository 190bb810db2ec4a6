"""Object detection and instance segmentation: torchvision's Mask R-CNN on vitssl backbones,
COCO-format data and pycocotools' AP."""

from vitssl.eval.detection.coco import CocoDetection, CocoSet, load_coco
from vitssl.eval.detection.coco_eval import coco_ap, prediction_entries
from vitssl.eval.detection.jitter import large_scale_jitter
from vitssl.eval.detection.model import build_detector
from vitssl.eval.detection.presets import PRESETS, DetectionPreset, resolve_preset
from vitssl.eval.detection.pyramid import build_pyramid
from vitssl.eval.detection.train import DetectionResult, evaluate_detector, train_detector
from vitssl.eval.detection.windows import window_attention

__all__ = ["PRESETS", "CocoDetection", "CocoSet", "DetectionPreset", "DetectionResult", "build_detector",
           "build_pyramid", "coco_ap", "evaluate_detector", "large_scale_jitter", "load_coco", "prediction_entries",
           "resolve_preset", "train_detector", "window_attention"]
