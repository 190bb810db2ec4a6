"""MAE: masked autoencoders (He et al., CVPR 2022, arXiv 2111.06377; facebookresearch/mae); with MAE-Lite's recipe (Wang et al., ICML 2023, arXiv 2205.14443; wangsr126/mae-lite projects/mae_lite/mae_lite_exp.py.

Per image, mask a random 75% of the patches; the ViT encoder sees only the visible ones (with
fixed sin-cos positions and a CLS token); a light decoder fills the masked positions with a
learned mask token and predicts every patch's pixels; the loss is the mean squared error
against per-patch normalised pixels, on the masked patches only. No teacher, one view.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator

import torch
from torch import nn

from vitssl.augment.mae_transform import MAECropConfig, MAEDeviceCrop, MAETransform, collate_images
from vitssl.augment.masking import random_masking
from vitssl.backbones import BackboneConfig, create_backbone, is_vit, patch_size_of
from vitssl.engine.protocol import BenchmarkSetup, EvalInput, MethodBase, StepContext, StepOutput
from vitssl.engine.validation import ConfigError, require_multiple, require_number
from vitssl.heads.mae_decoder import MAEDecoder, MAEDecoderConfig
from vitssl.losses.mae import MAELoss, patch_statistics, patchify, unpatchify


@dataclass
class MAEConfig:
    """MAE's own hyper-parameters; defaults are MAE ViT-B/16's (MAE paper Sec. 3; facebookresearch/mae models_mae.py)."""

    name: str = "mae"
    mask_ratio: float = 0.75
    norm_pix_loss: bool = True
    decoder: MAEDecoderConfig = field(default_factory=MAEDecoderConfig)
    crop: MAECropConfig = field(default_factory=MAECropConfig)

    def __post_init__(self) -> None:
        require_number("method.mask_ratio", self.mask_ratio, 0.0, 1.0, lo_open=True, hi_open=True)
        self.decoder.validate("method.decoder")

    def check_backbone_fit(self, backbone: BackboneConfig) -> None:
        """The encoder is a ViT with sin-cos positions that reads whole patches of each crop."""
        if not is_vit(backbone):  # Swin, CvT, ViL, ResNet: no token sequence an encoder can drop patches of
            raise ConfigError(f"method.name={self.name} needs a ViT (a visible-only encoder), got backbone.name="
                              f"{backbone.name}: use vit_tiny, vit_small or vit_base")
        if backbone.stem != "patch":
            raise ConfigError(f"method.name={self.name} needs backbone.stem=patch, got backbone.stem={backbone.stem}: "
                              "a convolutional stem's 3x3 windows cross patch borders, so the visible tokens would "
                              "see pixels of the masked patches they are asked to reconstruct")
        replace(backbone, pos_embed="sincos")  # checks the width splits into sin-cos quarters
        patch = patch_size_of(backbone)
        require_multiple("method.crop.size", self.crop.size, patch, f"the patch size {patch} (backbone.patch_size)")


def init_mae_weights(module: nn.Module) -> None:
    """MAE's initialisation (MAE paper Sec. 3; facebookresearch/mae models_mae.py): Xavier-uniform Linear weights with zero biases, the
    patch-embedding conv as a Linear over its flattened kernel, LayerNorm (1, 0), CLS and mask
    tokens N(0, 0.02). Fixed position embeddings are left alone."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for name, p in module.named_parameters():
        if name.endswith("patch_embed.proj.weight"):
            nn.init.xavier_uniform_(p.data.view(p.shape[0], -1))
        elif name.endswith(("cls_token", "mask_token")):
            nn.init.normal_(p, std=0.02)


class MAE(MethodBase):
    """The MAE method: implements `vitssl.engine.protocol.Method`."""

    Config = MAEConfig
    paper = "MAE (He et al., CVPR 2022)"
    cpu_preset = "demo_mae_mnist"
    gates_state_updates = True  # no state besides the optimizer's: nothing to gate
    benchmark_setups = (BenchmarkSetup("mae-lite", "MAE-Lite ViT-Tiny", "mae_lite_vit_tiny16", 256),)

    def __init__(self, cfg: MAEConfig, backbone: BackboneConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = create_backbone(replace(backbone, pos_embed="sincos"))
        if not hasattr(self.encoder, "forward_masked"):
            raise ValueError(f"MAE needs a backbone with a visible-only encoder (a ViT), got '{backbone.name}'")
        self.patch_size = self.encoder.patch_size
        grid = (backbone.img_size // self.patch_size, backbone.img_size // self.patch_size)
        self.decoder = MAEDecoder(self.encoder.embed_dim, self.patch_size, grid, cfg.decoder)
        self.loss = MAELoss(self.patch_size, cfg.norm_pix_loss)
        self.transform = MAETransform(cfg.crop)
        init_mae_weights(self)

    # -- data ----------------------------------------------------------------------------
    def train_transform(self) -> Callable[[Any, torch.Generator], torch.Tensor]:
        return self.transform

    def device_transform(self) -> MAEDeviceCrop:
        """The same crop and flip, batched on the accelerator (`train.augment_on=device`)."""
        return MAEDeviceCrop(self.cfg.crop)

    def collate(self, samples: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        return collate_images(samples)

    def synthetic_batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        size = self.cfg.crop.size
        return torch.randn(batch_size, 3, size, size, generator=generator), torch.zeros(batch_size, dtype=torch.long)

    @classmethod
    def evaluation_input(cls, cfg: MAEConfig, backbone: BackboneConfig) -> EvalInput:
        """The crop size and the crop's mean/std."""
        return EvalInput(cfg.crop.size, tuple(cfg.crop.mean), tuple(cfg.crop.std))

    @classmethod
    def tiny_overrides(cls) -> tuple[str, ...]:
        return ("method.decoder.depth=1", "method.decoder.embed_dim=16", "method.decoder.num_heads=2",
                "method.crop.size=16")

    # -- model ---------------------------------------------------------------------------
    def grid(self, images: torch.Tensor) -> tuple[int, int]:
        h, w = images.shape[-2:]
        return h // self.patch_size, w // self.patch_size

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 3, H, W) -> (predicted pixels (B, L, p*p*3), mask (B, L), 1 = masked).

        The mask is drawn from `generator` when given, else from torch's global generator
        (whose state the trainer checkpoints).
        """
        pred, mask, _ = self.forward_with_keep(images, generator)
        return pred, mask

    def forward_with_keep(self, images: torch.Tensor, generator: torch.Generator | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`forward`, also returning `ids_keep` (B, n_keep): the visible patches in encoder order
        (what a distillation teacher must see to match the student token for token)."""
        grid = self.grid(images)
        ids_keep, mask, ids_restore = random_masking(
            images.shape[0], grid[0] * grid[1], self.cfg.mask_ratio, generator, images.device)
        tokens = self.encoder.forward_masked(images, ids_keep)
        pred = self.decoder(tokens.cls, tokens.patches, ids_restore, tokens.grid)
        return pred, mask, ids_keep

    # -- optimisation --------------------------------------------------------------------
    def trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Everything but the fixed sin-cos position embeddings of encoder and decoder."""
        return ((n, p) for n, p in self.named_parameters() if p.requires_grad)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], ctx: StepContext) -> StepOutput:
        images, _ = batch
        pred, mask = self(images)
        return StepOutput(self.loss(pred, images, mask))

    def before_optimizer_step(self, ctx: StepContext) -> None:
        pass

    def after_optimizer_step(self, ctx: StepContext) -> None:
        pass

    def evaluation_backbone(self) -> nn.Module:
        return self.encoder

    def student_backbone(self) -> nn.Module:
        """MAE has no teacher: the student is the encoder evaluation uses."""
        return self.encoder

    # -- visualisation -------------------------------------------------------------------
    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(masked input, reconstruction, loss) for a grid of examples; images as the model sees them.

        The masked input has its masked patches set to 0 (the data-set mean after
        normalisation); the reconstruction shows the prediction at masked patches and the
        input at visible ones. With `norm_pix_loss` the prediction is per-patch normalised, so
        it is shown with each true patch's mean and std put back, which reveals those two
        numbers per masked patch (MAE's own visualisation checkpoint was trained on raw pixels,
        `norm_pix_loss=False`). Call `.eval()` first if the encoder has drop path.
        """
        pred, mask = self(images, generator)
        loss = self.loss(pred, images, mask)
        patches = patchify(images.float(), self.patch_size)
        pred = pred.float()
        if self.cfg.norm_pix_loss:
            mean, std = patch_statistics(patches, self.loss.eps)
            pred = pred * std + mean
        masked = mask.unsqueeze(-1).bool()
        grid = self.grid(images)
        masked_input = unpatchify(patches.masked_fill(masked, 0.0), self.patch_size, grid)
        reconstruction = unpatchify(torch.where(masked, pred, patches), self.patch_size, grid)
        return masked_input, reconstruction, loss
