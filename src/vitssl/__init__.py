"""vitssl: self-supervised pre-training of vision transformers (DINO, EsViT, SelfPatch, MAE-Lite).

The building blocks are plain modules, usable in your own training loop::

    from vitssl import DINOHead, DINOHeadConfig, DINOLoss, create_backbone

| name | what | module |
|---|---|---|
| `create_backbone`, `BackboneConfig`, `Tokens`, `ViT`, `Swin` | backbones returning `Tokens` | `vitssl.backbones` |
| `DINOHead`, `DINOHeadConfig`, `MAEDecoder`, `MAEDecoderConfig` | heads | `vitssl.heads` |
| `DINOLoss`, `MAELoss`, `Center` | objectives | `vitssl.losses` |
| `MultiCrop`, `MultiCropConfig`, `EvalTransform` | augmentations | `vitssl.augment` |
| `build_method`, `METHODS`, `DINO`, `EsViT`, `SelfPatch`, `MAE` | methods (one paper each) | `vitssl.methods` |
| `Trainer`, `TrainConfig`, `OptimConfig`, `ema_update` | the method-agnostic engine | `vitssl.engine` |
| `InputPipeline` | a data set as the trainer's batches (loader, decoding, augmentation) | `vitssl.data.pipeline` |
| `load_config`, `RunConfig`, `to_objects`, `preset_names` | config loading | `vitssl.config` |
| `load_pretrained` | a checkpoint's evaluation backbone | `vitssl.eval.pretrained` |

Names are imported on first use (module `__getattr__`), so `import vitssl` stays cheap and
does not import torch.
"""

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(["create_backbone", "BackboneConfig", "Tokens", "ViT", "Swin", "BACKBONES"], "vitssl.backbones"),
    **dict.fromkeys(["DINOHead", "DINOHeadConfig", "MAEDecoder", "MAEDecoderConfig"], "vitssl.heads"),
    **dict.fromkeys(["DINOLoss", "MAELoss", "Center"], "vitssl.losses"),
    **dict.fromkeys(["MultiCrop", "MultiCropConfig", "EvalTransform"], "vitssl.augment"),
    **dict.fromkeys(["build_method", "METHODS", "DINO", "EsViT", "SelfPatch", "MAE"], "vitssl.methods"),
    "Trainer": "vitssl.engine.trainer",
    "TrainConfig": "vitssl.engine.train_config",
    "InputPipeline": "vitssl.data.pipeline",
    "OptimConfig": "vitssl.engine.optim",
    "ema_update": "vitssl.engine.ema",
    **dict.fromkeys(["load_config", "RunConfig", "to_objects", "preset_names"], "vitssl.config"),
    "load_pretrained": "vitssl.eval.pretrained",
}
_SUBMODULES = ("analysis", "augment", "backbones", "commands", "config", "data", "engine", "eval", "heads", "losses",
               "methods")

__all__ = sorted([*_EXPORTS, *_SUBMODULES, "__version__"])


def _import(module: str) -> object:
    """The named module (builtin `__import__`: importlib itself would cost more than this package)."""
    return __import__(module, fromlist=["_"])


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        value = getattr(_import(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = _import(f"vitssl.{name}")
    elif name == "__version__":
        from importlib.metadata import version

        value = version("vitssl")
    else:
        raise AttributeError(f"module 'vitssl' has no attribute '{name}'")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
