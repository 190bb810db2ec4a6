"""Methods: `METHODS` is the only registry. Add a method by adding one line here."""

from __future__ import annotations

import difflib
from typing import Any

from torch import nn

from vitssl.backbones import BackboneConfig
from vitssl.methods.dino import DINO, DINOConfig
from vitssl.methods.esvit import EsViT, EsViTConfig
from vitssl.methods.mae import MAE, MAEConfig
from vitssl.methods.mae_distill import MAEDistill
from vitssl.methods.selfpatch import SelfPatch, SelfPatchConfig

METHODS: dict[str, type[nn.Module]] = {
    "dino": DINO,
    "esvit": EsViT,
    "mae": MAE,
    "mae-distill": MAEDistill,
    "selfpatch": SelfPatch,
}


def method_class(name: str) -> type[nn.Module]:
    if name not in METHODS:
        close = difflib.get_close_matches(name, METHODS, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ValueError(f"unknown method '{name}': {hint}choose one of {sorted(METHODS)}")
    return METHODS[name]


def method_configs() -> dict[str, type]:
    """Each method's config dataclass, by name (what `config.load_config` needs)."""
    return {name: cls.Config for name, cls in METHODS.items()}  # type: ignore[attr-defined]


def build_method(cfg: Any, backbone: BackboneConfig) -> nn.Module:
    """Build the method named `cfg.name` from its config dataclass; it remembers both configs
    (`built_from`), which a Trainer given no config records in the run (engine/run_config.py)."""
    method = method_class(cfg.name)(cfg, backbone)
    method.built_from = (cfg, backbone)
    return method


__all__ = ["METHODS", "DINO", "DINOConfig", "EsViT", "EsViTConfig", "MAE", "MAEConfig", "SelfPatch", "SelfPatchConfig", "build_method", "method_class", "method_configs"]
