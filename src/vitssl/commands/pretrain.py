"""`vitssl pretrain`: turn a config into a method, an input pipeline and a trainer, then run it."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from vitssl.analysis.plots import plot_loss_curve
from vitssl.commands.cpu_hint import log_cpu_hint
from vitssl.commands.run_folder import check_new_run_dir, check_resumable, prepare_run_dir
from vitssl.commands.summary import pretrain_summary
from vitssl.config import (
    ConfigError,
    RunConfig,
    load_config,
    read_yaml,
    save_config,
    to_container,
    to_objects,
)
from vitssl.data import build_dataset, report_skips
from vitssl.data.pipeline import InputPipeline
from vitssl.distributed import is_main_process
from vitssl.engine.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_partial_state,
)
from vitssl.engine.image_size import keep_resumed_size, refuse_size_change
from vitssl.engine.launch import init_distributed, teardown_distributed
from vitssl.engine.logging import log
from vitssl.engine.rng import seed_everything
from vitssl.engine.trainer import Trainer
from vitssl.engine.wording import counted
from vitssl.methods import build_method, method_configs


def resolve_pretrain_config(preset: str | None, overrides: list[str], resume_dir: Path | None) -> DictConfig:
    """A fresh run starts from the preset; a resumed one from the config saved in its folder."""
    if resume_dir is None:
        return load_config(preset, overrides, method_configs())
    check_resumable(resume_dir)  # a vitssl run with training state, before its config is read
    saved = resume_dir / "config.yaml"
    if preset:
        raise ConfigError("--config cannot be combined with --resume: the run folder's config.yaml is used")
    base = read_yaml(saved, "run config")
    cfg = load_config(None, keep_resumed_size(base, overrides), method_configs(), base=base)
    refuse_batch_change(base, cfg)
    refuse_size_change(base, cfg)
    return cfg


def refuse_batch_change(saved: DictConfig, cfg: DictConfig) -> None:
    """A resumed run keeps its batch: sample order, step count and lr scaling all follow from it
    (a changed batch can still give the same steps per epoch, e.g. under train.max_steps_per_epoch)."""
    for key in ("train.batch_size", "train.accum_steps"):
        before, now = OmegaConf.select(saved, key), OmegaConf.select(cfg, key)
        if before is not None and before != now:
            raise ConfigError(f"{key}={now} differs from the run's {before}: a resumed run keeps its batch; "
                              f"drop the override, or start a new run with --out")


def initialise_from(method: torch.nn.Module, checkpoint: str | Path) -> None:
    """Start from another run's weights (student, teacher, heads, centers), or from a timm-layout
    weights file (its backbone into every backbone); log what stays fresh."""
    from vitssl.eval.transfer.timm_weights import load_timm_into, read_timm_state

    if (timm_state := read_timm_state(checkpoint)) is not None:
        load_timm_into(method, checkpoint, timm_state)
        return
    payload = load_checkpoint(checkpoint)
    if "method" not in payload:
        raise CheckpointError(f"'{checkpoint}' is not a vitssl pre-training checkpoint (no method entry)")
    fresh = load_partial_state(method, payload["method"], "init_from")
    prefixes = sorted({".".join(k.split(".")[:2]) for k in fresh})
    log.info("initialised from %s; freshly initialised: %s", checkpoint, ", ".join(prefixes) or "nothing")


def pretrain(cfg: DictConfig, run_dir: str | Path, resume: bool = False) -> Trainer:
    """Pre-train as configured; writes config.yaml, checkpoints, metrics and loss_curve.png in `run_dir`.

    Under torchrun every process runs this: it joins the process group, trains its shard of
    each batch, and only rank 0 writes files.
    """
    objs = to_objects(cfg)
    objs.train.device, owns_group = init_distributed(objs.train.device)
    try:
        return _pretrain(cfg, objs, Path(run_dir), resume)
    finally:
        if owns_group:
            teardown_distributed()


def _pretrain(cfg: DictConfig, objs: RunConfig, run_dir: Path, resume: bool) -> Trainer:
    if is_main_process():  # before the data scan: a folder that cannot take the run is refused at once
        if resume:
            check_resumable(run_dir)
        else:
            check_new_run_dir(run_dir)
    if not objs.data.path:
        raise ConfigError("no training data: pass --data PATH (an image folder) or a built-in set (mnist, digits, shapes)")
    dataset = build_dataset(objs.data.path, split="train", seed=objs.train.seed,
                            max_image_pixels=objs.data.max_image_pixels)
    seed_everything(objs.train.seed)
    method = build_method(objs.method, objs.backbone)
    online_knn = None
    if objs.train.knn_every_epochs:  # checked before the run folder is touched
        from vitssl.eval.online_knn import OnlineKNN  # evaluation imports stay out of plain runs

        online_knn = OnlineKNN(objs.train.knn_data, objs.train.knn_every_epochs, objs.train.knn_k)
    if objs.init_from and not resume:  # a bad init_from is refused before the run folder is made
        initialise_from(method, objs.init_from)
    # sampler, loader, decoding, augmentation: built before the folder, so an augmentation the
    # chosen place cannot do or a batch larger than the data is refused without leaving one
    data = InputPipeline(method, dataset, objs.train)
    prepare_run_dir(run_dir, resume)
    trainer = Trainer(method, data, objs.train, objs.optim, run_dir, config=to_container(cfg))
    if is_main_process():
        log_cpu_hint(objs, trainer.device)  # no GPU and minutes per step: name a size that fits
    if online_knn is not None:
        trainer.epoch_end_callbacks.append(online_knn)
    if resume:
        trainer.resume(run_dir)  # the newest readable checkpoint: a corrupt latest one falls back to an older one
    if is_main_process():
        save_config(cfg, run_dir / "config.yaml")
    log.info("pre-training %s on %s (%s), %s of %s -> %s", objs.method.name, objs.data.path,
             counted(len(dataset), "image"), counted(trainer.total_steps, "step"), counted(trainer.global_batch, "image"), run_dir)
    started = time.perf_counter()
    try:
        trainer.fit()
    finally:
        if is_main_process():
            report_skips(dataset, run_dir)  # what the data folder could not give, also when stopped early
    if is_main_process():
        plot_loss_curve(run_dir)
        print(pretrain_summary(run_dir, trainer.step, time.perf_counter() - started, objs.data.path))
    return trainer
