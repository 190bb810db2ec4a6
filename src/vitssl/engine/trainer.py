"""The one training loop every method runs: schedules, AMP, accumulation, clipping, checkpoints."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from vitssl.distributed import is_main_process, mean_over_ranks, world_size
from vitssl.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    LATEST,
    CheckpointError,
    keep_rolling_copy,
    load_checkpoint,
    load_newest_readable,
    save_checkpoint,
)
from vitssl.engine.device import autocast, resolve_device, resolve_precision
from vitssl.engine.health import CollapseMonitor
from vitssl.engine.input import TrainingInput
from vitssl.engine.logging import MetricWriter, log
from vitssl.engine.nonfinite import NonFiniteSteps, TrainingDiverged  # noqa: F401  (importable from here too)
from vitssl.engine.optim import (
    CLIP_MODES,
    OptimConfig,
    build_optimizer,
    clip_gradients,
    decay_groups,
)
from vitssl.engine.parallel import ParallelStep
from vitssl.engine.protocol import Method, StepContext, optional_member
from vitssl.engine.rng import rng_state, seed_everything, set_rng_state  # noqa: F401  (seed_everything: importable from here too)
from vitssl.engine.run_config import run_config_of, write_run_config
from vitssl.engine.schedules import cosine_schedule, scaled_lr
from vitssl.engine.step_guard import StepGuard, decides_on_device, first_nonfinite
from vitssl.engine.stop_signals import StopRequest
from vitssl.engine.train_config import TrainConfig


class TrainingInterrupted(RuntimeError):
    """Ctrl-C or SIGTERM: the current state was saved and the run can be resumed."""


class Trainer(NonFiniteSteps):
    """Runs a `Method` on the batches of a `TrainingInput`. Knows nothing about any particular
    method, nor where batches come from: the caller builds the input pipeline
    (`vitssl.data.pipeline.InputPipeline(method, dataset, train)`) and hands it over.

    Per optimizer step: set lr / weight decay from their schedules, run `accum_steps`
    micro-batches under autocast, unscale, clip, `before_optimizer_step`, step,
    `after_optimizer_step`, log, maybe checkpoint. A run folder holds `checkpoint.pt` (latest),
    `checkpoint_epochNNNN.pt` snapshots, `metrics.jsonl` and TensorBoard scalars.
    """

    def __init__(self, method: Method, data: TrainingInput, train: TrainConfig, optim: OptimConfig,
                 run_dir: str | Path, config: dict[str, Any] | None = None) -> None:
        if not isinstance(method, nn.Module):
            raise TypeError("a method must be an nn.Module holding its networks and state")
        self.cfg, self.optim_cfg, self.run_dir = train, optim, Path(run_dir)
        self.config = config or run_config_of(method, train, optim)  # what load_pretrained(run_dir) rebuilds
        # called as f(trainer, epoch) after each epoch's checkpoint; returned scalars are logged
        self.epoch_end_callbacks: list[Callable[[Trainer, int], dict[str, float] | None]] = []
        self.step_end_callbacks: list[Callable[[Trainer], None]] = []  # f(trainer) after each optimizer step
        if optim.clip_mode not in CLIP_MODES:
            raise ValueError(f"unknown optim.clip_mode '{optim.clip_mode}': choose one of {CLIP_MODES}")
        self.device = resolve_device(train.device)
        self.precision = resolve_precision(train.precision, self.device)
        self.method = method.to(self.device)
        self.parallel = ParallelStep(method, self.device, train.strategy, train.find_unused_parameters,
                                     train.compile, self.precision)
        if (data.device, data.accum_steps) != (self.device, train.accum_steps):
            raise ValueError(f"the input pipeline gives {data.accum_steps} micro-batches a step on {data.device}, the "
                             f"trainer takes {train.accum_steps} on {self.device}: build both from one train config")
        self.data = data
        groups = decay_groups(method.trainable_parameters(), optim.no_weight_decay_names)
        self.params = [p for g in groups for p in g["params"]]
        # a bad step's update skipped on the device, its flags read on log steps (no sync per step)
        self.on_device = decides_on_device(method, optim.optimizer, self.precision, self.parallel.sharded)
        self.optimizer = build_optimizer(groups, optim, self.device, fused=True if self.on_device else None)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        self.steps_per_epoch = data.steps_per_epoch
        self.total_steps = train.epochs * self.steps_per_epoch
        self.global_batch = train.batch_size * train.accum_steps * world_size()
        self.peak_lr = scaled_lr(optim.lr, self.global_batch)
        self.step = 0
        self._last_save = time.monotonic()
        self.stop = StopRequest()  # SIGINT, SIGTERM, SIGHUP while fitting
        self._stop_seen = False  # a stop signal on some rank, as of the last step's verdict
        self.skipped_steps = 0  # non-finite-loss steps skipped over the whole run (kept in checkpoints)
        self._nonfinite_streak = 0
        self.guard = StepGuard(method, self.optimizer, self.params, self.device, check_grads=not self.scaler.is_enabled())
        self._unconfirmed: Path | None = None  # the latest checkpoint, until a good step ran from it
        self.collapse = CollapseMonitor(train.collapse_min_entropy, train.collapse_max_kl, train.collapse_patience)

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
            "method": self.parallel.method_state_dict(),
            "optimizer": self.parallel.optimizer_state_dict(self.optimizer),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "world_size": world_size(),
            "skipped_steps": self.skipped_steps,
            "rng": rng_state(),
        }

    def save(self, name: str = LATEST) -> Path | None:
        """Write a checkpoint atomically; saving the latest also keeps `train.keep_checkpoints` rolling ones."""
        self._last_save = time.monotonic()
        if self.on_device:
            self._settle_checks()  # every rank: never a checkpoint from an unread step
        if not (is_main_process() or self.parallel.sharded):
            return None
        if self.guard.state_bad(collective=self.parallel.sharded):
            if self.parallel.strategy != "ddp":  # every rank knows: stop now
                self._diverged(self._bad_update_reason(self.step - 1))
            log.warning("step %d: the last update made the state non-finite: not saved", self.step)
            return None  # DDP's rank 0 alone: the next step's all-reduced check stops every rank
        state = self.state_dict()  # with FSDP a collective: every rank gathers, rank 0 writes
        if not is_main_process():
            return None
        path = save_checkpoint(state, self.run_dir / name)
        if name == LATEST:
            keep_rolling_copy(path, self.step, self.cfg.keep_checkpoints)
            self._unconfirmed = path
        return path

    def resume(self, path: str | Path) -> None:
        """Restore everything a checkpoint holds, so the run continues on the same path.

        `path` is a checkpoint file (loaded as is) or a run folder: then the newest readable of
        `checkpoint.pt`, the rolling and the epoch checkpoints, unreadable ones renamed `*.corrupt`.
        """
        if Path(path).is_dir():
            path, ckpt = load_newest_readable(path, map_location=self.device, set_aside=is_main_process())
        else:
            ckpt = load_checkpoint(path, map_location=self.device)
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"'{path}' is not a vitssl training checkpoint (format {ckpt.get('format')!r})")
        optimizer = ckpt.get("optimizer")
        bad = first_nonfinite(ckpt.get("method")) or first_nonfinite(optimizer.get("state") if isinstance(optimizer, dict) else None)
        if bad:
            raise CheckpointError(f"'{path}' holds NaN/Inf values ({bad}): it was saved after its run diverged; "
                                  f"move it aside to resume from an older checkpoint of {Path(path).parent}")
        if ckpt["steps_per_epoch"] != self.steps_per_epoch:
            raise CheckpointError(
                f"'{path}' was written with {ckpt['steps_per_epoch']} steps per epoch, this run has "
                f"{self.steps_per_epoch}: resume with the same data, batch size and accum_steps"
            )
        if ckpt.get("world_size", world_size()) != world_size():  # older checkpoints do not say
            raise CheckpointError(f"'{path}' was written by {ckpt['world_size']} processes, this run has "
                                  f"{world_size()}: resume with the same number of processes (global batch)")
        self.parallel.load_method_state(ckpt["method"])
        self.parallel.load_optimizer_state(self.optimizer, ckpt["optimizer"])
        for group in self.optimizer.param_groups:  # the checkpoint's groups carry its run's choice
            if "fused" in group:
                group["fused"] = self.optimizer.defaults["fused"]
        self.scaler.load_state_dict(ckpt["scaler"])
        self.step = int(ckpt["step"])
        self.skipped_steps = int(ckpt.get("skipped_steps", 0))
        set_rng_state(ckpt["rng"])
        self._unconfirmed = Path(path)
        self.guard.forget()
        log.info("resumed from %s at step %d (epoch %d)", path, self.step, self.step // self.steps_per_epoch)

    # -- loop ------------------------------------------------------------------------------
    def _batches(self, epoch: int, start_step: int) -> Iterator[Any]:
        """The epoch's micro-batches from optimizer step `start_step` on (host memory)."""
        self.data.set_epoch(epoch, start_step)
        return iter(self.data)

    def _prepare(self, batch: Any, micro: int) -> Any:
        """A micro-batch on the device, augmented there when the pipeline does that."""
        return self.data.to_device(batch, self.step, micro)

    def _context(self) -> StepContext:
        logged = (self.step + 1) % self.cfg.log_every == 0 or self.step + 1 == self.total_steps
        return StepContext(self.step, self.step // self.steps_per_epoch, self.steps_per_epoch,
                           self.total_steps, self.cfg.epochs, logged)

    def _optimizer_step(self, micro_batches: list[Any]) -> dict[str, torch.Tensor | float]:
        ctx = self._context()
        lr, wd = self._apply_schedules()
        self.method.train()
        self.guard.snapshot_buffers()  # a skipped step's forward must not leave BatchNorm statistics behind
        sums: dict[str, torch.Tensor | float] = {}
        finite = torch.ones((), dtype=torch.bool, device=self.device)
        for i, batch in enumerate(micro_batches):
            sync = i == len(micro_batches) - 1  # DDP/FSDP reduce gradients on the last micro-batch only
            with self.parallel.gradient_sync(sync), autocast(self.precision, self.device):
                out = self.parallel.training_step(self._prepare(batch, i), ctx)
            finite &= torch.isfinite(out.loss.detach())
            with self.parallel.gradient_sync(sync):
                self.scaler.scale(out.loss / len(micro_batches)).backward()
            for key, value in {"loss": out.loss, **out.metrics}.items():
                value = value.detach() if isinstance(value, torch.Tensor) else value
                sums[key] = sums.get(key, 0.0) + value / len(micro_batches)
        self.scaler.unscale_(self.optimizer)
        if self.on_device:
            return {**sums, "lr": lr, "weight_decay": wd, **self._gated_update(ctx, finite, sums["loss"])}
        verdict = self.guard.verdict(finite, self.stop.signum is not None)  # the step's one host-device sync
        self._stop_seen = verdict.stop
        if verdict.bad:
            return {**sums, "lr": lr, "weight_decay": wd, **self._skip_nonfinite_step(verdict, sums["loss"])}
        self._nonfinite_streak = 0
        self._confirm_latest()
        clip_gradients(self.params, self.optim_cfg.clip_grad, self.optim_cfg.clip_mode, self.parallel.sharded)
        self.method.before_optimizer_step(ctx)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.method.after_optimizer_step(ctx)
        self.guard.track_state()  # read with the next step's flags
        self.step += 1
        return {**sums, "lr": lr, "weight_decay": wd, "skipped_steps": self.skipped_steps, **self.data.metrics()}

    def _gated_update(self, ctx: StepContext, finite: torch.Tensor, loss: torch.Tensor | float) -> dict[str, float]:
        """The update, applied or skipped on the device with no host-device sync: the fused
        optimizer takes the step's flag as a found-inf flag (as under GradScaler), buffers and the
        method's state updates are gated with it. The flags are read on log steps, before every
        save and at epoch ends (`_settle_checks`)."""
        flags = self.guard.reduced_flags(finite, self.stop.signum is not None)
        applied = flags[:3].sum() == 0  # loss, gradients, state left by the last update
        self.guard.restore_buffers_unless(applied)
        clip_gradients(self.params, self.optim_cfg.clip_grad, self.optim_cfg.clip_mode, self.parallel.sharded)
        self.method.before_optimizer_step(ctx)
        self.optimizer.found_inf = (~applied).float()  # type: ignore[attr-defined]  # fused AdamW: no update, no step count
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.method.after_optimizer_step(dataclasses.replace(ctx, applied=applied))
        self.guard.track_state()  # folded into the next step's flags
        self.guard.queue(self.step, flags, loss)
        self.step += 1
        if ctx.logged:
            self._settle_checks()
        return {"skipped_steps": self.skipped_steps, **self.data.metrics()}

    def _stop_agreed(self) -> bool:
        """Stop after this step? Alone: whether a signal came. Under torchrun: whether one reached any
        rank by the step's verdict (read in its all-reduce), so every rank stops at the same step."""
        if world_size() == 1:
            return self.stop.signum is not None
        return self._stop_seen

    def fit(self) -> None:
        """Train from `self.step` to the end; SIGINT, SIGTERM, SIGHUP save a resumable checkpoint.

        A signal already set to be ignored (`nohup` ignores SIGHUP) stays ignored. Data-loader
        workers ignore these signals (`StopSignalSafeLoader`), so one sent to the whole process
        group reaches the trainer only; the workers are ended here (`self.data.close()`).
        """
        if is_main_process():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_run_config(self.run_dir, self.config)  # a library-built run: config.yaml beside the checkpoints
        writer = MetricWriter(self.run_dir, self.cfg.tensorboard, enabled=is_main_process(),
                              wandb_project=self.cfg.wandb_project if self.cfg.wandb else None, config=self.config)
        try:
            with self.stop:
                self._fit(writer)
        finally:
            self.data.close()
            writer.close()

    def _fit(self, writer: MetricWriter) -> None:
        accum = self.cfg.accum_steps
        start_epoch = self.step // self.steps_per_epoch
        self._ensure_good_checkpoint()
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
                    metrics = mean_over_ranks(metrics)  # the only reads of step tensors
                    writer.write(self.step, metrics)
                    if is_main_process():
                        self.collapse.check(self.step, metrics)
                    shown = dict(loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}",
                                 img_s=f"{metrics['images_per_s']:.0f}")
                    shown.update({m.label: format(metrics[m.key], m.fmt) for m in
                                  optional_member(self.method, "progress_metrics") if m.key in metrics})
                    bar.set_postfix(**shown)
                self._maybe_checkpoint()
                for callback in self.step_end_callbacks:
                    callback(self)
                if self._stop_agreed():
                    self.save()
                    raise TrainingInterrupted(
                        f"stopped at step {self.step}: continue with `vitssl pretrain --resume {self.run_dir}`"
                    )
            bar.close()
            self._settle_checks()  # every rank is here: the last update's check is final
            self.save()
            if self.cfg.save_every_epochs and (epoch + 1) % self.cfg.save_every_epochs == 0:
                self.save(f"checkpoint_epoch{epoch + 1:04d}.pt")
            log.info("epoch %d/%d done (step %d)", epoch + 1, self.cfg.epochs, self.step)
            for callback in self.epoch_end_callbacks:
                extra = callback(self, epoch)
                if extra:
                    writer.write(self.step, {**extra, "epoch": epoch})

    def _maybe_checkpoint(self) -> None:
        every = self.cfg.checkpoint_every_steps
        minutes = self.cfg.checkpoint_every_minutes
        due_by_time = bool(minutes) and time.monotonic() - self._last_save > 60 * minutes
        if world_size() > 1:  # ranks agree on time-based saves at log steps only (a broadcast)
            due_by_time = self.step % self.cfg.log_every == 0 and self.parallel.agree(due_by_time)
        if (every and self.step % every == 0) or due_by_time:
            self.save()
