"""Value checks of the trainer's and optimizer's config sections, run when each is built.

Kept apart from the dataclasses so the engine modules stay about training; each dataclass's
`__post_init__` calls its check (imported there, when first needed), so `vitssl config`, `pretrain`, resume and library users all
get a one-line `ConfigError` before anything is written.
"""

from __future__ import annotations

import torch

from vitssl.engine.optim import CLIP_MODES, OPTIMIZERS, OptimConfig
from vitssl.engine.parallel import STRATEGIES
from vitssl.engine.train_config import PRECISIONS, TrainConfig
from vitssl.engine.validation import (
    ConfigError,
    fail,
    require_choice,
    require_int,
    require_number,
    require_numbers,
    require_probability,
)

PLACES = ("cpu", "device")  # train.augment_on and train.decode_on


def check_device(key: str, name: str) -> None:
    """'auto' or a device string torch can parse (cpu, cuda, cuda:1, mps); not whether it exists."""
    if name == "auto":
        return
    try:
        torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        fail(key, name, "is not a device", "use auto, cpu, cuda, cuda:N or mps")


def check_train(c: TrainConfig, p: str = "train") -> None:
    """Every TrainConfig field: lengths and batches >= 1, cadences >= 0, known choices."""
    for name in ("epochs", "batch_size", "accum_steps", "log_every", "knn_k", "collapse_patience"):
        require_int(f"{p}.{name}", getattr(c, name), lo=1)
    require_int(f"{p}.num_workers", c.num_workers, lo=0, optional=True)  # None: by the cores (engine/cores.py)
    for name in ("max_steps_per_epoch", "checkpoint_every_steps", "save_every_epochs",
                 "keep_checkpoints", "max_nonfinite_steps", "knn_every_epochs"):
        require_int(f"{p}.{name}", getattr(c, name), lo=0)
    require_int(f"{p}.seed", c.seed)
    for name in ("checkpoint_every_minutes", "collapse_min_entropy", "collapse_max_kl"):
        require_number(f"{p}.{name}", getattr(c, name), lo=0.0)
    check_device(f"{p}.device", c.device)
    require_choice(f"{p}.precision", c.precision, PRECISIONS)
    require_choice(f"{p}.augment_on", c.augment_on, PLACES)
    require_choice(f"{p}.decode_on", c.decode_on, PLACES)
    require_choice(f"{p}.strategy", c.strategy, STRATEGIES)
    if c.decode_on == "device" and c.augment_on != "device":
        raise ConfigError(f"{p}.decode_on=device needs {p}.augment_on=device (the workers then only read bytes): "
                          f"set {p}.augment_on=device or {p}.decode_on=cpu")
    if c.knn_every_epochs and not c.knn_data:
        raise ConfigError(f"{p}.knn_every_epochs={c.knn_every_epochs} but {p}.knn_data is empty: name a labelled "
                          "set (mnist, digits, shapes, or an ImageFolder with train/ and val/)")


def check_optim(c: OptimConfig, p: str = "optim") -> None:
    """Every OptimConfig field: rates and decays finite and >= 0, betas and momentum in [0, 1)."""
    require_choice(f"{p}.optimizer", c.optimizer, OPTIMIZERS)
    for name in ("lr", "min_lr", "weight_decay", "weight_decay_end", "clip_grad"):
        require_number(f"{p}.{name}", getattr(c, name), lo=0.0)
    require_int(f"{p}.warmup_epochs", c.warmup_epochs, lo=0)
    require_numbers(f"{p}.betas", c.betas, length=2, lo=0.0, hi=1.0, hi_open=True)
    require_probability(f"{p}.momentum", c.momentum)
    require_choice(f"{p}.clip_mode", c.clip_mode, CLIP_MODES)
    for i, name in enumerate(c.no_weight_decay_names):
        if not isinstance(name, str) or not name:
            fail(f"{p}.no_weight_decay_names[{i}]", name, "is not a parameter name", "use a non-empty string")
