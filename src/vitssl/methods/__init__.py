"""Methods: `METHODS` is the only registry. Add a method by adding one line here, or, for a method
defined outside the package (a plug-in, a test), by calling `register_method` before the CLI runs."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from torch import nn

from vitssl.backbones import BackboneConfig
from vitssl.engine.protocol import Method, MethodBase
from vitssl.methods.dino import DINO, DINOConfig
from vitssl.methods.esvit import EsViT, EsViTConfig
from vitssl.methods.mae import MAE, MAEConfig
from vitssl.methods.mae_distill import MAEDistill
from vitssl.methods.selfpatch import SelfPatch, SelfPatchConfig

METHODS: dict[str, type[nn.Module]] = {
    "dino": DINO,
    "esvit": EsViT,
    "selfpatch": SelfPatch,
    "mae": MAE,
    "mae-distill": MAEDistill,
}


def register_method(name: str, cls: type[nn.Module]) -> type[nn.Module]:
    """Add `cls` to `METHODS` as `name` (what `method.name` selects); returns `cls`.

    The class must derive from `MethodBase`, implement `Method` and carry its config dataclass as
    `Config`, whose `name` defaults to `name`. A taken name is refused: remove it from `METHODS` first.
    """
    if name in METHODS:
        raise ValueError(f"method '{name}' is already registered (to {METHODS[name].__name__}): choose another name")
    if not (isinstance(cls, type) and issubclass(cls, MethodBase)):
        raise TypeError(f"{cls!r} does not derive from vitssl.engine.protocol.MethodBase")
    missing = [m for m in ("Config", *_required_members()) if not hasattr(cls, m)]
    if missing:
        raise TypeError(f"{cls.__name__} lacks {missing}: a method implements vitssl.engine.protocol.Method")
    default_name = {f.name: f.default for f in dataclasses.fields(cls.Config)}.get("name")  # type: ignore[attr-defined]
    if default_name != name:
        raise ValueError(f"{cls.__name__}.Config.name defaults to {default_name!r}: make it {name!r}")
    METHODS[name] = cls
    return cls


def _required_members() -> list[str]:
    return [m for m in vars(Method) if not m.startswith("_")]


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


__all__ = ["METHODS", "DINO", "DINOConfig", "EsViT", "EsViTConfig", "MAE", "MAEConfig", "SelfPatch", "SelfPatchConfig", "build_method", "method_class", "method_configs", "register_method"]
