"""Mask R-CNN fine-tuning recipes of the papers, plus a tiny one for CPU work.

Each preset is the papers' schedule in epochs (so it scales to any data set size) with the lr
given at the preset's batch size; a smaller batch scales it linearly. The ViTDet preset has its
windowed attention (`eval.detection.windows`) and large-scale jitter (`eval.detection.jitter`);
not reproduced: ViTDet's relative positions and the 1x schedule's multi-scale resize and crop
(those presets train on a fixed-size resize and horizontal flips).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from vitssl.engine.validation import require_choice, require_int, require_number


@dataclass(frozen=True)
class DetectionPreset:
    """Mask R-CNN recipe: resize (short side `min_size`, long side at most `max_size`), AdamW
    with layer decay, linear warm-up and x0.1 steps at `lr_steps` (fractions of training)."""

    min_size: int
    max_size: int
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.05
    layer_decay: float = 1.0
    warmup_iters: int = 250
    lr_steps: tuple[float, ...] = (8 / 12, 11 / 12)
    drop_path: float = 0.0
    pyramid: str = "simple"
    fpn_channels: int = 256
    head_width: int = 256  # mask head convolutions (torchvision's 4 x 256)
    box_representation: int = 1024  # box head MLP width (torchvision's 1024)
    proposals: tuple[int, int] = (2000, 1000)  # RPN proposals kept before / after NMS in training
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    rpn_batch: int = 256
    roi_batch: int = 512
    detections_per_image: int = 100
    hflip: bool = True
    window_size: int = 0  # plain ViT: attention within window² squares of patches in most blocks; 0: global
    global_blocks: tuple[int, ...] = ()  # the blocks that keep global attention when window_size > 0
    lsj_scale: tuple[float, float] | None = None  # large-scale jitter's resize range (x the min_size square)
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for name in ("min_size", "max_size", "epochs", "batch_size", "fpn_channels", "rpn_batch", "roi_batch",
                     "detections_per_image", "head_width", "box_representation"):
            require_int(name, getattr(self, name), lo=1)
        require_int("warmup_iters", self.warmup_iters, lo=0)
        for name in ("lr", "weight_decay", "drop_path"):
            require_number(name, getattr(self, name), lo=0.0)
        require_number("layer_decay", self.layer_decay, 0.0, 1.0, lo_open=True)
        require_choice("pyramid", self.pyramid, ("simple", "blocks"))
        require_int("window_size", self.window_size, lo=0)
        if self.lsj_scale is not None:
            lo, hi = self.lsj_scale
            if not 0 < lo <= hi:
                raise ValueError(f"lsj_scale {list(self.lsj_scale)} must be (low, high) with 0 < low <= high, "
                                 "e.g. (0.1, 2.0) as ViTDet")
            if self.min_size != self.max_size:
                raise ValueError("large-scale jitter trains on min_size x min_size squares: set max_size = min_size")
        if len(self.anchor_sizes) != 5:
            raise ValueError(f"anchor_sizes needs 5 sizes (levels 0-3 and pool), got {list(self.anchor_sizes)}")

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


PRESETS: dict[str, DetectionPreset] = {
    # MAE-Lite (Wang et al. 2023, sec. 5 / Table 7; repo det/ mask_rcnn_vitdet_t_100ep): ViTDet-T,
    # 640x640, bs 64, 100 epochs, AdamW lr 1e-4, wd 0.05, no layer decay, steps at 24/27 and 26/27.
    # ViTDet (Li et al. 2022, sec. 3 and 4): window 14 with global blocks 2, 5, 8, 11; large-scale
    # jitter, scale 0.1-2.0 of the 640 square, after a horizontal flip (detectron2's LSJ pipeline).
    "vitdet_t_640": DetectionPreset(min_size=640, max_size=640, epochs=100, batch_size=64, lr=1e-4,
                                    warmup_iters=250, lr_steps=(24 / 27, 26 / 27), pyramid="simple",
                                    window_size=14, global_blocks=(2, 5, 8, 11), lsj_scale=(0.1, 2.0),
                                    source="MAE-Lite ViTDet-T, detectron2 mask_rcnn_vitdet_t_100ep"),
    # SelfPatch (Yun et al. 2022, Table 2; repo detection/ configs): Mask R-CNN 1x, 12 epochs,
    # steps 8/11, AdamW lr 5e-5 at 8 images, wd 0.05, drop path 0.05, ViT blocks 4/6/8/12 to FPN.
    "selfpatch_1x": DetectionPreset(min_size=800, max_size=1333, epochs=12, batch_size=8, lr=5e-5,
                                    warmup_iters=1000, drop_path=0.05, pyramid="blocks",
                                    source="SelfPatch Mask R-CNN 1x (mmdet)"),
    # EsViT (Li et al. 2022, Table 4) follows Swin's Mask R-CNN 1x (Liu et al. 2021): 16 images,
    # AdamW lr 1e-4, wd 0.05, drop path 0.2, 12 epochs, steps 8/11; stage outputs into an FPN.
    "esvit_1x": DetectionPreset(min_size=800, max_size=1333, epochs=12, batch_size=16, lr=1e-4,
                                warmup_iters=500, drop_path=0.2, source="EsViT / Swin Mask R-CNN 1x (mmdet)"),
    # CPU work on the built-in shapes set (64x64): small anchors, a narrow FPN, a few epochs.
    "tiny": DetectionPreset(min_size=64, max_size=64, epochs=8, batch_size=8, lr=1e-3, warmup_iters=10,
                            lr_steps=(0.75, 0.9), fpn_channels=32, head_width=32, box_representation=128,
                            proposals=(200, 100), anchor_sizes=(8, 16, 24, 32, 48), rpn_batch=64, roi_batch=64, detections_per_image=20, source="vitssl, CPU shapes"),
}


def resolve_preset(name: str, epochs: int | None = None, batch_size: int | None = None,
                   lr: float | None = None) -> DetectionPreset:
    """A named preset with the CLI's overrides; a smaller batch scales the preset's lr linearly."""
    if name not in PRESETS:
        raise ValueError(f"unknown detection preset '{name}': choose one of {', '.join(PRESETS)}")
    preset = PRESETS[name]
    changes: dict[str, Any] = {}
    if epochs is not None:
        changes["epochs"] = epochs
    if batch_size is not None:
        changes["batch_size"] = batch_size
        changes["lr"] = preset.lr * batch_size / preset.batch_size
    if lr is not None:
        changes["lr"] = lr
    return replace(preset, **changes)
