"""DINO projection head (DINO paper Sec. 3.1; facebookresearch/dino vision_transformer.py DINOHead): MLP -> L2 norm -> weight-normalised prototypes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from vitssl.engine.validation import require_int


@dataclass
class DINOHeadConfig:
    """Sizes of the head; K = out_dim prototypes."""

    out_dim: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    nlayers: int = 3
    use_bn: bool = False
    norm_last_layer: bool = True

    def validate(self, prefix: str) -> None:
        """Sizes >= 1; `prefix` is where the head sits (method.head, method.region_head, ...)."""
        for name in ("out_dim", "hidden_dim", "bottleneck_dim", "nlayers"):
            require_int(f"{prefix}.{name}", getattr(self, name), lo=1)


class DINOHead(nn.Module):
    """`Linear(D,h) GELU [Linear(h,h) GELU]* Linear(h,b)`, L2-normalise, `last_layer` (b -> K).

    `last_layer` is weight-normalised (torch parametrization: `original0` = g, `original1` = v).
    With `norm_last_layer` the magnitude g is frozen at 1, so logits are cosines to unit
    prototypes; DINO's help text says False helps ViT-S but may be unstable.
    """

    def __init__(self, in_dim: int, cfg: DINOHeadConfig) -> None:
        super().__init__()
        if cfg.nlayers < 1:
            raise ValueError(f"DINO head needs nlayers >= 1, got {cfg.nlayers}")
        layers: list[nn.Module] = []
        dims = [in_dim] + [cfg.hidden_dim] * (cfg.nlayers - 1) + [cfg.bottleneck_dim]
        for i in range(cfg.nlayers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < cfg.nlayers - 1:
                if cfg.use_bn:
                    layers.append(nn.BatchNorm1d(dims[i + 1]))
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        self.apply(self._init_weights)
        self.last_layer = prototype_layer(cfg)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) features -> (..., b) L2-normalised bottleneck, what the prototypes score."""
        return F.normalize(self.mlp(x), dim=-1, p=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) features -> (..., K) logits."""
        return self.last_layer(self.embed(x))


def prototype_layer(cfg: DINOHeadConfig) -> nn.Module:
    """The K weight-normalised prototypes (bottleneck -> K, no bias), magnitude g = 1, frozen
    with `norm_last_layer`."""
    layer = weight_norm(nn.Linear(cfg.bottleneck_dim, cfg.out_dim, bias=False))
    with torch.no_grad():
        layer.parametrizations.weight.original0.fill_(1.0)
    if cfg.norm_last_layer:
        layer.parametrizations.weight.original0.requires_grad = False
    return layer
