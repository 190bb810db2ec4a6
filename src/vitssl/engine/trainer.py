"""The one training loop every method runs: schedules, AMP, accumulation, clipping, checkpoints."""

from __future__ import annotations

import contextlib
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from vitssl.data.loaders import AugmentedDataset, EpochBatchSampler, build_train_loader
from vitssl.distributed import is_main_process, world_size
from vitssl.engine.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_matching_state,
    save_checkpoint,
)
from vitssl.engine.logging import MetricWriter, log, to_float
from vitssl.engine.optim import (
    CLIP_MODES,
    OptimConfig,
    build_optimizer,
    clip_gradients,
    decay_groups,
)
from vitssl.engine.protocol import Method, StepContext
from vitssl.engine.schedules import cosine_schedule, scaled_lr

CHECKPOINT_FORMAT = "vitssl/1"


@dataclass
class TrainConfig:
    """How to run: length, batch, precision, device, logging and checkpoint cadence."""

    epochs: int = 100
    batch_size: int = 64
    accum_steps: int = 1
    num_workers: int = 8
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    max_steps_per_epoch: int = 0
    log_every: int = 10
    checkpoint_every_steps: int = 0
    checkpoint_every_minutes: float = 15.0
    save_every_epochs: int = 20
    tensorboard: bool = True
    progress: bool = True


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good state was saved."""


class TrainingInterrupted(RuntimeError):
    """Ctrl-C or SIGTERM: the current state was saved and the run can be resumed."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device=cuda was asked for but no CUDA GPU is visible: use train.device=cpu")
    return device


def resolve_precision(name: str, device: torch.device) -> str:
    if name not in PRECISIONS:
        raise ValueError(f"unknown train.precision '{name}': choose one of {PRECISIONS}")
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if name == "fp16" and device.type != "cuda":
        raise ValueError("train.precision=fp16 needs a CUDA GPU (it uses a gradient scaler): use bf16 or fp32 on CPU")
    return name


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and random: model initialisation and drop-path draws follow from it."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Global RNG states in a form `torch.load(weights_only=True)` accepts."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Runs a `Method` on a data set. Knows nothing about any particular method.

    Per optimizer step: set lr / weight decay from their schedules, run `accum_steps`
    micro-batches under autocast, unscale, clip, `before_optimizer_step`, step,
    `after_optimizer_step`, log, maybe checkpoint. A run folder holds `checkpoint.pt` (latest),
    `checkpoint_epochNNNN.pt` snapshots, `metrics.jsonl` and TensorBoard scalars.
    """

    def __init__(self, method: Method, dataset: Dataset, train: TrainConfig, optim: OptimConfig,
                 run_dir: str | Path, config: dict[str, Any] | None = None) -> None:
        if not isinstance(method, nn.Module):
            raise TypeError("a method must be an nn.Module holding its networks and state")
        self.cfg, self.optim_cfg, self.run_dir = train, optim, Path(run_dir)
        self.config = config or {}
        if optim.clip_mode not in CLIP_MODES:
            raise ValueError(f"unknown optim.clip_mode '{optim.clip_mode}': choose one of {CLIP_MODES}")
        self.device = resolve_device(train.device)
        self.precision = resolve_precision(train.precision, self.device)
        self.method = method.to(self.device)
        self.dataset = AugmentedDataset(dataset, method.train_transform(), train.seed)
        groups = decay_groups(method.trainable_parameters(), optim.no_weight_decay_names)
        self.params = [p for g in groups for p in g["params"]]
        self.optimizer = build_optimizer(groups, optim, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        batches = EpochBatchSampler(len(self.dataset), train.batch_size, train.seed,
                                    max_batches=train.max_steps_per_epoch * train.accum_steps).num_batches()
        self.steps_per_epoch = batches // train.accum_steps
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"the data set has {len(self.dataset)} images, fewer than one step of "
                f"{train.batch_size * train.accum_steps * world_size()}: lower train.batch_size or add images"
            )
        self.total_steps = train.epochs * self.steps_per_epoch
        self.global_batch = train.batch_size * train.accum_steps * world_size()
        self.peak_lr = scaled_lr(optim.lr, self.global_batch)
        self.step = 0
        self._last_save = time.monotonic()
        self._stop_signal: int | None = None
        self._loader: DataLoader | None = None

    # -- schedules -------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        warmup = self.optim_cfg.warmup_epochs * self.steps_per_epoch
        return cosine_schedule(step, self.total_steps, self.peak_lr, self.optim_cfg.min_lr, warmup)

    def weight_decay_at(self, step: int) -> float:
        o = self.optim_cfg
        return cosine_schedule(step, self.total_steps, o.weight_decay, o.weight_decay_end)

    def _apply_schedules(self) -> tuple[float, float]:
        lr, wd = self.lr_at(self.step), self.weight_decay_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            group["weight_decay"] = wd if group.get("apply_weight_decay", True) else 0.0
        return lr, wd

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config,
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "rng": rng_state(),
        }

    def save(self, name: str = "checkpoint.pt") -> Path | None:
        self._last_save = time.monotonic()
        if not is_main_process():
            return None
        return save_checkpoint(self.state_dict(), self.run_dir / name)

    def resume(self, path: str | Path) -> None:
        """Restore everything a checkpoint holds, so the run continues on the same path."""
        ckpt = load_checkpoint(path, map_location=self.device)
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"'{path}' is not a vitssl training checkpoint (format {ckpt.get('format')!r})")
        if ckpt["steps_per_epoch"] != self.steps_per_epoch:
            raise CheckpointError(
                f"'{path}' was written with {ckpt['steps_per_epoch']} steps per epoch, this run has "
                f"{self.steps_per_epoch}: resume with the same data, batch size and accum_steps"
            )
        load_matching_state(self.method, ckpt["method"], "method")
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.step = int(ckpt["step"])
        set_rng_state(ckpt["rng"])
        log.info("resumed from %s at step %d (epoch %d)", path, self.step, self.step // self.steps_per_epoch)

    # -- loop ------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _batches(self, epoch: int, start_step: int) -> Iterator[Any]:
        if self._loader is None:
            self._loader = build_train_loader(
                self.dataset, self.method.collate, self.cfg.batch_size, self.cfg.num_workers, self.cfg.seed,
                max_batches=self.steps_per_epoch * self.cfg.accum_steps, pin_memory=self.device.type == "cuda",
            )
        self._loader.batch_sampler.set_epoch(epoch, start_step * self.cfg.accum_steps)
        return iter(self._loader)

    def _to_device(self, batch: Any) -> Any:
        if isinstance(batch, torch.Tensor):
            return batch.to(self.device, non_blocking=True)
        if isinstance(batch, (list, tuple)):
            return type(batch)(self._to_device(b) for b in batch)
        if isinstance(batch, dict):
            return {k: self._to_device(v) for k, v in batch.items()}
        return batch

    def _context(self) -> StepContext:
        return StepContext(self.step, self.step // self.steps_per_epoch, self.steps_per_epoch,
                           self.total_steps, self.cfg.epochs)

    def _optimizer_step(self, micro_batches: list[Any]) -> dict[str, torch.Tensor | float]:
        ctx = self._context()
        lr, wd = self._apply_schedules()
        self.method.train()
        sums: dict[str, torch.Tensor | float] = {}
        for batch in micro_batches:
            with self._autocast():
                out = self.method.training_step(self._to_device(batch), ctx)
            if not torch.isfinite(out.loss.detach()).item():
                self.save()
                raise TrainingDiverged(
                    f"loss is {to_float(out.loss)} at step {self.step}: the state before this step is saved in "
                    f"{self.run_dir / 'checkpoint.pt'}; lower optim.lr, use train.precision=fp32 or bf16, or lower "
                    "the teacher temperature, then continue with --resume"
                )
            self.scaler.scale(out.loss / len(micro_batches)).backward()
            for key, value in {"loss": out.loss, **out.metrics}.items():
                value = value.detach() if isinstance(value, torch.Tensor) else value
                sums[key] = sums.get(key, 0.0) + value / len(micro_batches)
        self.scaler.unscale_(self.optimizer)
        clip_gradients(self.params, self.optim_cfg.clip_grad, self.optim_cfg.clip_mode)
        self.method.before_optimizer_step(ctx)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.method.after_optimizer_step(ctx)
        self.step += 1
        return {**sums, "lr": lr, "weight_decay": wd}

    def _handle_signal(self, signum: int, _frame: Any) -> None:
        """First Ctrl-C / SIGTERM: finish the current step, save, stop. A second Ctrl-C aborts."""
        if self._stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self._stop_signal = signum
        log.warning("stopping after this step (press Ctrl-C again to abort without saving)")

    def fit(self) -> None:
        """Train from `self.step` to the end; Ctrl-C / SIGTERM save a resumable checkpoint."""
        if is_main_process():
            self.run_dir.mkdir(parents=True, exist_ok=True)
        writer = MetricWriter(self.run_dir, self.cfg.tensorboard, enabled=is_main_process())
        handlers = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                handlers[sig] = signal.signal(sig, self._handle_signal)
            except ValueError:  # not the main thread: leave signals alone
                pass
        try:
            self._fit(writer)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            writer.close()

    def _fit(self, writer: MetricWriter) -> None:
        accum = self.cfg.accum_steps
        start_epoch = self.step // self.steps_per_epoch
        for epoch in range(start_epoch, self.cfg.epochs):
            first = self.step - epoch * self.steps_per_epoch
            batches = self._batches(epoch, first)
            bar = tqdm(total=self.steps_per_epoch, initial=first, desc=f"epoch {epoch + 1}/{self.cfg.epochs}",
                       disable=not (self.cfg.progress and is_main_process()), dynamic_ncols=True, leave=False)
            tick = time.perf_counter()
            for _ in range(first, self.steps_per_epoch):
                metrics = self._optimizer_step([next(batches) for _ in range(accum)])
                now = time.perf_counter()
                metrics["images_per_s"] = self.global_batch / max(now - tick, 1e-9)
                tick = now
                metrics["epoch"] = epoch
                bar.update(1)
                if self.step % self.cfg.log_every == 0 or self.step == self.total_steps:
                    metrics = {k: to_float(v) for k, v in metrics.items()}  # the only reads of step tensors
                    writer.write(self.step, metrics)
                    bar.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}",
                                    img_s=f"{metrics['images_per_s']:.0f}")
                self._maybe_checkpoint()
                if self._stop_signal is not None:
                    self.save()
                    raise TrainingInterrupted(
                        f"stopped at step {self.step}: continue with `vitssl pretrain --resume {self.run_dir}`"
                    )
            bar.close()
            self.save()
            if self.cfg.save_every_epochs and (epoch + 1) % self.cfg.save_every_epochs == 0:
                self.save(f"checkpoint_epoch{epoch + 1:04d}.pt")
            log.info("epoch %d/%d done (step %d)", epoch + 1, self.cfg.epochs, self.step)

    def _maybe_checkpoint(self) -> None:
        every = self.cfg.checkpoint_every_steps
        minutes = self.cfg.checkpoint_every_minutes
        if (every and self.step % every == 0) or (minutes and time.monotonic() - self._last_save > 60 * minutes):
            self.save()
