"""One knob for the training resolution: `data.image_size` (the CLI's `--image-size N`).

A run's resolution lives in several keys that must agree: `backbone.img_size`, the DINO
family's `method.crops.global_crops_size` and `local_crops_size`, MAE's `method.crop.size`.
Setting `data.image_size` sets all of them. The local crop size keeps DINO's ratio of local to
global crops, 96/224 (DINO paper Sec. 3.1; facebookresearch/dino main_dino.py
`--local_crops_size`), rounded to whole patches and at least one patch. A key given explicitly
alongside (or after) `data.image_size` keeps its given value.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vitssl.engine.validation import ConfigError

LOCAL_TO_GLOBAL = 96 / 224
KEY = "data.image_size"


def local_crop_size(image_size: int, patch: int) -> int:
    """DINO's local crop size for a global size: 96/224 of it, in whole patches (>= 1 patch)."""
    return max(1, round(image_size * LOCAL_TO_GLOBAL / patch)) * patch


def _patch(cfg: DictConfig) -> int:
    from vitssl.backbones import patch_size_of

    return patch_size_of(SimpleNamespace(name=cfg.backbone.name, patch_size=cfg.backbone.patch_size))


def _keys(node: Any, prefix: str = "") -> set[str]:
    if not isinstance(node, DictConfig):
        return set()
    out = set()
    for k in node.keys():
        out.add(f"{prefix}{k}")
        out |= _keys(node._get_node(k), f"{prefix}{k}.")
    return out


def sizes_for(cfg: DictConfig, image_size: int) -> dict[str, Any]:
    """Dotted key -> value that `image_size` sets in this config (its method's crop keys only)."""
    patch = _patch(cfg)
    if image_size % patch:
        below, above = image_size - image_size % patch, image_size - image_size % patch + patch
        raise ConfigError(f"{KEY}={image_size} is not a multiple of the patch size {patch} "
                          f"({cfg.backbone.name}): use {below or above} or {above}")
    out: dict[str, Any] = {"backbone.img_size": image_size}
    method = cfg.method
    if "crops" in method:  # DINO, EsViT, SelfPatch
        local = local_crop_size(image_size, patch)
        current = method.crops.local_crops_size
        out["method.crops.global_crops_size"] = image_size
        out["method.crops.local_crops_size"] = [local] * len(current) if OmegaConf.is_list(current) else local
    if "crop" in method:  # MAE, MAE-Lite, D-MAE-Lite
        out["method.crop.size"] = image_size
    return out


def apply_image_size(cfg: DictConfig, preset: DictConfig | None, overrides: DictConfig) -> None:
    """Set the resolution keys of `cfg` from `data.image_size` where this load gave it (preset or
    override; a saved run's own value is already applied). Keys given in the same or a later
    layer stay as given."""
    if OmegaConf.select(overrides, KEY) is not None:
        explicit = _keys(overrides)
    elif preset is not None and OmegaConf.select(preset, KEY) is not None:
        explicit = _keys(preset) | _keys(overrides)
    else:
        return
    image_size = cfg.data.image_size
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ConfigError(f"{KEY}={image_size!r} is not a positive integer: use e.g. {KEY}=64")
    for key, value in sizes_for(cfg, image_size).items():
        if key not in explicit:
            OmegaConf.update(cfg, key, value, merge=False)


RESOLUTION_KEYS = ("backbone.img_size", "method.crops.global_crops_size", "method.crops.local_crops_size",
                   "method.crop.size")


def run_image_size(saved: DictConfig) -> Any:
    """The size a run trained at: its `data.image_size`, else its backbone's `img_size`."""
    return OmegaConf.select(saved, KEY) or OmegaConf.select(saved, "backbone.img_size")


def keep_resumed_size(saved: DictConfig, overrides: list[str]) -> list[str]:
    """A resumed run keeps its image size (its weights, crops and data order follow from it):
    `data.image_size` (`--image-size`) naming another size is refused, one naming the run's own
    size is dropped (so it cannot re-derive the run's other size keys)."""
    kept = []
    for item in overrides:
        if item.split("=", 1)[0].lstrip("+~") != KEY:
            kept.append(item)
            continue
        given = OmegaConf.select(OmegaConf.from_dotlist([item.lstrip("+~")]), KEY)
        if given is not None and given != run_image_size(saved):  # null: sizes as configured, the run's
            raise ConfigError(f"--image-size / {KEY}={given} differs from the run's {run_image_size(saved)}: a resumed "
                              f"run keeps its image size; drop it, or start a new run with --out")
    return kept


def refuse_size_change(saved: DictConfig, cfg: DictConfig) -> None:
    """Any resolution key (backbone size, crop sizes) changed on resume is refused, as above."""
    for key in RESOLUTION_KEYS:
        before, now = OmegaConf.select(saved, key), OmegaConf.select(cfg, key)
        if before is not None and before != now:
            raise ConfigError(f"{key}={now} differs from the run's {before}: a resumed run keeps its image size; "
                              f"drop the override, or start a new run with --out")
