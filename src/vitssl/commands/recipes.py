"""What each packaged preset is for: its paper, the number it should reach and what it costs.

Kept apart from the preset YAML files because the config loader refuses unknown keys (a
`recipe:` block would fail every run). Method and backbone are read from the resolved preset,
so they cannot disagree with it. Numbers come from the papers' headline tables and the original repositories' READMEs
(each recipe names its source; ImageNet-1K top-1 unless said otherwise) or, for the demos, from the
measurements recorded in docs/methods/*.md. Compute is given as the originals state it: GPU-days
where the original README states them, otherwise epochs x images and the global batch.
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGENET = "1.28M ImageNet-1K images"
DINO = "DINO (Caron et al., ICCV 2021)"
ESVIT = "EsViT (Li et al., ICLR 2022)"
MAE = "MAE (He et al., CVPR 2022)"
MAE_LITE = "MAE-Lite (Wang et al., ICML 2023)"
SELFPATCH = "SelfPatch (Yun et al., CVPR 2022)"


@dataclass(frozen=True)
class Recipe:
    """One preset's provenance: `target` is the number to expect, `compute` what it takes."""

    paper: str
    target: str
    compute: str


def _esvit(linear_knn: str, backbone: str = "") -> Recipe:
    batch = {"s14": "2 nodes x 16 GPUs x 16", "b14": "4 nodes x 16 GPUs x 8"}.get(backbone, "16 GPUs x 32")
    total = 1024 if backbone == "bs64" else 512
    batch = "16 GPUs x 64" if backbone == "bs64" else batch
    return Recipe(ESVIT, f"linear / k-NN {linear_knn} (EsViT paper Table 1; microsoft/esvit README, released checkpoint)",
                  f"300 epochs x {IMAGENET}, global batch {total} ({batch})")


RECIPES: dict[str, Recipe] = {
    "demo_mnist": Recipe(DINO, "20-NN top-1 0.525 at random init -> 0.817 (seed 0; 0.775 over 3 seeds), raw pixels 0.933 "
                         "at 24 px (docs/own-data.md)",
                         "1250 steps of 32 images at 24 px: ~4.5 min on 2 idle CPU cores"),
    "demo_base": Recipe(DINO, "20-NN top-1 0.331 at random init -> 0.446 on MNIST (docs/methods/dino.md)",
                        "500 steps of 32 images: ~3 min on 2 CPU cores"),
    "demo_digits": Recipe(DINO, "20-NN top-1 0.683 -> 0.886 (seed 0; 0.875 over 3 seeds), raw pixels 0.978 (docs/own-data.md)",
                          "484 steps of 32 images: a few minutes on 2 CPU cores"),
    "demo_shapes": Recipe(DINO, "20-NN top-1 0.204 -> 0.224, chance 0.2; meant for dense probes (docs/methods/dino.md)",
                          "496 steps of 32 images: a few minutes on 2 CPU cores"),
    "demo_selfpatch_shapes": Recipe(SELFPATCH, "shapes-fg linear segmentation probe mIoU 0.526 at random init -> "
                                    "0.557 (mean of seeds 0-2; docs/own-data.md)",
                                    "~500 steps of 32 images: a few minutes on 2 CPU cores"),
    "demo_mae_mnist": Recipe(MAE, "held-out masked-patch MSE 0.490 (predicting the mean: 1.011); 20-NN 0.445 -> 0.569, "
                             "raw pixels 0.943 (seed 0; docs/own-data.md)",
                             "992 steps of 64 images: 213 s of CPU time on one thread"),
    "dino_vit_small16": Recipe(DINO, "k-NN 69.3 / linear 74.0 (facebookresearch/dino README, 'vanilla' row); the longest "
                               "released ViT-S/16 run reaches 74.5 / 77.0 (DINO paper Table 2; facebookresearch/dino README)",
                               f"100 epochs x {IMAGENET}, 8 GPUs x 64: 1.75 days on 8 GPUs (~340 GPU-hours)"),
    "dino_vit_small16_boost": Recipe(DINO, "k-NN 73.3 / linear 76.0 (facebookresearch/dino README, 'boost' row)",
                                     f"300 epochs x {IMAGENET}, 16 GPUs x 64: 2.6 days on 16 GPUs "
                                     "(~1000 GPU-hours)"),
    "dino_vit_base16": Recipe(DINO, "k-NN 76.1 / linear 78.2 (DINO paper Table 2; facebookresearch/dino README)",
                              f"400 epochs x {IMAGENET} (the released run; no GPU-hours published)"),
    "dino_small_data_cifar": Recipe(DINO, "no published number (DINO reports no CIFAR pre-training): "
                                    "measure k-NN with vitssl eval knn",
                                    "200 epochs x 50k images (10M images seen), one GPU x 256"),
    "dino_small_data_in100": Recipe(DINO, "no published number for ImageNet-100: measure k-NN / linear "
                                    "with vitssl eval",
                                    "300 epochs x ~127k images (38M images seen), global batch 256"),
    "esvit_swin_tiny_w7": _esvit("78.0 / 75.7 (paper 78.1)"),
    "esvit_swin_tiny_w7_view": _esvit("77.0 / 74.2, view task only"),
    "esvit_swin_small_w7": _esvit("79.5 / 77.7"),
    "esvit_swin_small_w7_view": _esvit("79.2 / 76.9, view task only"),
    "esvit_swin_base_w7": _esvit("80.4 / 78.9"),
    "esvit_swin_base_w7_view": _esvit("79.6 / 77.7, view task only"),
    "esvit_swin_tiny_w14": _esvit("78.7 / 77.0"),
    "esvit_swin_small_w14": _esvit("80.8 / 79.1", "s14"),
    "esvit_swin_base_w14": _esvit("81.3 / 79.3", "b14"),
    "esvit_cvt_tiny_w7": _esvit("78.5 / 76.7", "bs64"),
    "esvit_vil_tiny": _esvit("77.5 / 74.5", "bs64"),
    "esvit_resnet50": _esvit("75.7 / 71.3", "bs64"),
    "demo_esvit_shapes": Recipe(ESVIT, "the recipe of the esvit_*_cpu presets (its own ViT-Tiny is untested): "
                                "see esvit_cvt_tiny_cpu (docs/methods/esvit.md)",
                                "248 steps of 32 images: minutes on 2 CPU cores"),
    "esvit_cvt_tiny_cpu": Recipe(ESVIT, "20-NN top-1 on shapes above the same network at random init: 0.296 -> 0.419 (3 seeds) "
                                 "(docs/methods/esvit.md)", "248 steps of 32 images: ~5 min on one CPU thread"),
    "esvit_vil_tiny_cpu": Recipe(ESVIT, "20-NN top-1 on shapes above the same network at random init: 0.293 -> 0.374 (3 seeds) "
                                 "(docs/methods/esvit.md)", "248 steps of 32 images: 6 - 8 min on one CPU thread"),
    "esvit_resnet50_cpu": Recipe(ESVIT, "20-NN top-1 on shapes 0.281 -> 0.246 (3 seeds), not above random init "
                                 "(esvit_resnet50_mnist_cpu is); region correspondence 0.12 against chance 0.11 "
                                 "and 0.13 - 0.16 at random init (docs/methods/esvit.md)",
                                 "248 steps of 32 images: ~5 min on one CPU thread"),
    "esvit_resnet50_mnist_cpu": Recipe(ESVIT, "20-NN top-1 on MNIST above the same network at random init: "
                                       "0.837 -> 0.916 (3 seeds) (docs/methods/esvit.md)",
                                       "2,500 steps of 32 images: ~8 min on one CPU thread"),
    "esvit_vit_small16": Recipe(ESVIT, "no published number (EsViT issue #28): compare with dino_vit_small16's "
                                "k-NN 69.3 / linear 74.0",
                                f"100 epochs x {IMAGENET}, 8 GPUs x 64 (as dino_vit_small16)"),
    "selfpatch_vit_small16": Recipe(SELFPATCH, "COCO Mask R-CNN 1x 42.1 AP^bb / 38.5 AP^mk, ADE20K Semantic FPN "
                                    "41.2 mIoU, DAVIS J&F ~62.7 (SelfPatch paper Tables 1-3; alinlab/SelfPatch README)",
                                    f"300 epochs (paper: 200) x {IMAGENET}, 8 GPUs x 128"),
    "mae_vit_base16": Recipe(MAE, "fine-tune 83.6 / linear 67.8 (MAE paper App. A.1, Tables 9-10; facebookresearch/mae FINETUNE.md; released checkpoints: 1600 epochs)",
                             f"800 epochs x {IMAGENET}, global batch 4096 (ViT-L, 800 epochs: ~42 h on 64 V100)"),
    "mae_lite_vit_tiny16": Recipe(MAE_LITE, "78.0 after the 300-epoch 'impr.' fine-tune (wangsr126/mae-lite README)",
                                  f"400 epochs x {IMAGENET}, global batch 4096 on 8 GPUs"),
    "mae_lite_vit_small16": Recipe(MAE_LITE, "82.1 after the 300-epoch 'impr.' fine-tune (wangsr126/mae-lite README)",
                                   f"400 epochs x {IMAGENET}, global batch 4096 on 8 GPUs"),
    "dmae_lite_vit_tiny16": Recipe(MAE_LITE + ", D-MAE-Lite", "78.4 after the 300-epoch 'impr.' fine-tune "
                                   "(wangsr126/mae-lite README; COCO ViTDet 42.3 AP^bb / 37.4 AP^mk)",
                                   f"400 epochs x {IMAGENET}, global batch 4096 on 8 GPUs, plus a frozen "
                                   "MAE ViT-B/16 teacher (1600 epochs of MAE pre-training) run on the visible patches"),
    "dmae_lite_vit_small16": Recipe(MAE_LITE + ", D-MAE-Lite", "82.5 after the 300-epoch 'impr.' fine-tune (wangsr126/mae-lite README)",
                                    f"400 epochs x {IMAGENET}, global batch 4096 on 8 GPUs, plus a frozen "
                                    "MAE ViT-B/16 teacher"),
}

def default_recipe(method_name: str) -> Recipe:
    """What a preset without an entry in `RECIPES` shows: its method's paper (`MethodBase.paper`)."""
    from vitssl.methods import method_class

    paper = method_class(method_name).paper or method_name  # type: ignore[attr-defined]
    return Recipe(paper, "no reference number recorded: measure with vitssl eval (and add it to "
                         "vitssl/commands/recipes.py)", "not recorded")


def recipe_rows(names: list[str] | None = None) -> list[dict[str, str]]:
    """One row per preset: name, method, backbone (from the resolved preset), paper, target, compute."""
    from vitssl.config import load_config, preset_names
    from vitssl.methods import method_configs

    chosen = names or preset_names()
    rows = []
    for name in chosen:
        cfg = load_config(name, [], method_configs())
        recipe = RECIPES.get(name) or default_recipe(str(cfg.method.name))
        patch = cfg.backbone.patch_size
        backbone = f"{cfg.backbone.name}" + (f"/{patch}" if patch else "")
        rows.append({"preset": name, "method": str(cfg.method.name), "backbone": backbone,
                     "paper": recipe.paper, "target": recipe.target, "compute": recipe.compute})
    return rows


def format_recipes(names: list[str] | None = None) -> str:
    """The rows as indented text blocks (the fields are too long for one table line)."""
    blocks = []
    for row in recipe_rows(names):
        blocks.append(f"{row['preset']}  ({row['method']}, {row['backbone']})\n"
                      f"    paper    {row['paper']}\n"
                      f"    target   {row['target']}\n"
                      f"    compute  {row['compute']}")
    return "\n\n".join(blocks)
