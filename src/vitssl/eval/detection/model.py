"""torchvision's Mask R-CNN on a vitssl backbone (RPN, RoI heads and losses are torchvision's)."""

from __future__ import annotations

from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

from vitssl.backbones import ViT
from vitssl.eval.detection.presets import DetectionPreset
from vitssl.eval.detection.pyramid import build_pyramid
from vitssl.eval.detection.windows import window_attention

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
SELFPATCH_DETECTION_BLOCKS = (3, 5, 7, 11)  # SelfPatch's mmdet ViT adapter, 12 blocks (0-based)


def build_detector(backbone: nn.Module, num_classes: int, preset: DetectionPreset,
                   mean: list[float] | None = None, std: list[float] | None = None) -> MaskRCNN:
    """Mask R-CNN for `num_classes` object classes (+ background) over the backbone's pyramid.

    The model's transform resizes each image (short side `min_size`, long side at most
    `max_size`), normalises it with the backbone's pre-training mean/std and pads the batch to a
    multiple of 32, which every vitssl backbone's stride divides. A preset with `window_size`
    makes the ViT's blocks other than `global_blocks` attend within windows (ViTDet), in place."""
    depth = len(getattr(backbone, "blocks", ()))
    if preset.window_size:
        if not isinstance(backbone, ViT):
            raise ValueError(f"this preset's windowed attention (ViTDet) is for a plain ViT, not a "
                             f"{type(backbone).__name__}: use esvit_1x or tiny for a hierarchical backbone")
        window_attention(backbone, preset.window_size, preset.global_blocks)
    blocks = SELFPATCH_DETECTION_BLOCKS if preset.pyramid == "blocks" and depth == 12 else None
    pyramid = build_pyramid(backbone, preset.fpn_channels, preset.pyramid, blocks)
    anchors = AnchorGenerator(sizes=tuple((s,) for s in preset.anchor_sizes), aspect_ratios=((0.5, 1.0, 2.0),) * 5)
    c, w, rep = preset.fpn_channels, preset.head_width, preset.box_representation
    return MaskRCNN(pyramid, min_size=preset.min_size, max_size=preset.max_size,
                    image_mean=mean or IMAGENET_MEAN, image_std=std or IMAGENET_STD, rpn_anchor_generator=anchors,
                    rpn_batch_size_per_image=preset.rpn_batch, box_batch_size_per_image=preset.roi_batch,
                    box_detections_per_img=preset.detections_per_image,
                    rpn_pre_nms_top_n_train=preset.proposals[0], rpn_post_nms_top_n_train=preset.proposals[1],
                    rpn_pre_nms_top_n_test=preset.proposals[1], rpn_post_nms_top_n_test=preset.proposals[1],
                    box_head=TwoMLPHead(c * 7 * 7, rep), mask_head=MaskRCNNHeads(c, (w,) * 4, 1),
                    box_predictor=FastRCNNPredictor(rep, num_classes + 1),
                    mask_predictor=MaskRCNNPredictor(w, w, num_classes + 1))
