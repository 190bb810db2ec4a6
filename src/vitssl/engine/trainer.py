"""The one training loop every method runs: schedules, AMP, accumulation, clipping, checkpoints."""

from __future__ import annotations

import contextlib
import random
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from vitssl.augment.device_input import collate_decoded, decoded_uint8
from vitssl.data import folder_dataset
from vitssl.data.device_decode import DeviceJPEGDecoder
from vitssl.data.loaders import (
    STOP_SIGNALS,
    AugmentedDataset,
    EpochBatchSampler,
    StopSignalSafeLoader,
    build_train_loader,
    sample_seed,
)
from vitssl.distributed import all_reduce_sum, is_main_process, mean_over_ranks, rank, world_size
from vitssl.engine.checkpoint import (
    LATEST,
    CheckpointError,
    keep_rolling_copy,
    load_checkpoint,
    load_newest_readable,
    save_checkpoint,
)
from vitssl.engine.cores import default_num_workers
from vitssl.engine.health import CollapseMonitor
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
from vitssl.engine.protocol import Method, StepContext
from vitssl.engine.run_config import run_config_of, write_run_config
from vitssl.engine.schedules import cosine_schedule, scaled_lr
from vitssl.engine.step_guard import StepGuard, first_nonfinite

CHECKPOINT_FORMAT = "vitssl/1"


@dataclass
class TrainConfig:
    """How to run: length, batch, precision, device, logging and checkpoint cadence."""

    epochs: int = 100
    batch_size: int = 64
    accum_steps: int = 1
    num_workers: int | None = None  # None: 8, capped at the CPU cores this process may use
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    max_steps_per_epoch: int = 0
    log_every: int = 10
    checkpoint_every_steps: int = 0
    checkpoint_every_minutes: float = 15.0
    save_every_epochs: int = 20
    keep_checkpoints: int = 2  # rolling checkpoint-stepNNNNNNN.pt files kept beside checkpoint.pt
    max_nonfinite_steps: int = 5  # consecutive NaN/Inf loss or gradient steps skipped before stopping
    collapse_min_entropy: float = 0.05  # nats: teacher entropy below this warns of one-prototype collapse
    collapse_max_kl: float = 0.05  # nats: KL(mean||uniform) and mutual info below this warn of uniform collapse
    collapse_patience: int = 2  # consecutive log steps a collapse condition must hold before the warning
    # "cpu": workers run the method's augmentation; "device": workers only decode and the
    # method's device_transform() augments the batch on the accelerator (DINO family, MAE)
    augment_on: str = "cpu"
    # with augment_on=device: "cpu" = workers decode every image; "device" = workers read JPEG
    # bytes and the step decodes them in one batched call on the accelerator (nvJPEG on CUDA)
    decode_on: str = "cpu"
    tensorboard: bool = True
    wandb: bool = False  # also log to Weights & Biases (pip install wandb); project below
    wandb_project: str = "vitssl"
    progress: bool = True
    # online k-NN: every N epochs (0: off), a labelled set (built-in name or ImageFolder with
    # train/ and val/): train split as memory, val split as queries; logged as knn_top1
    knn_every_epochs: int = 0
    knn_data: str = ""
    knn_k: int = 20
    # under torchrun: "ddp" (replicated) or "fsdp" (fully sharded, for large backbones); see docs/distributed.md
    strategy: str = "ddp"
    find_unused_parameters: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        from vitssl.engine.config_checks import check_train

        check_train(self)


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


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


class Trainer(NonFiniteSteps):
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
        if train.num_workers is None:  # resolved here, so a saved config resolves again on the next machine
            train = replace(train, num_workers=default_num_workers())
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
        transform, self.collate, self.device_augment = self._input_pipeline(method, train.augment_on)
        self.device_decode = self._device_decoder(dataset, train)
        self.dataset = AugmentedDataset(dataset, transform, train.seed)
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
        self._loader: StopSignalSafeLoader | None = None
        self.skipped_steps = 0  # non-finite-loss steps skipped over the whole run (kept in checkpoints)
        self._nonfinite_streak = 0
        self.guard = StepGuard(method, self.optimizer, self.params, self.device, check_grads=not self.scaler.is_enabled())
        self._unconfirmed: Path | None = None  # the latest checkpoint, until a good step ran from it
        self.collapse = CollapseMonitor(train.collapse_min_entropy, train.collapse_max_kl, train.collapse_patience)

    @staticmethod
    def _input_pipeline(method: Method, augment_on: str) -> tuple[Callable, Callable, Callable | None]:
        """(per-sample transform, collate, batch augmentation on the device or None)."""
        if augment_on == "cpu":
            return method.train_transform(), method.collate, None
        if augment_on != "device":
            raise ValueError(f"unknown train.augment_on '{augment_on}': choose cpu or device")
        make = getattr(method, "device_transform", None)
        if make is None:
            raise ValueError(f"{type(method).__name__} has no device-side augmentation: use train.augment_on=cpu")
        return decoded_uint8, collate_decoded, make()

    def _device_decoder(self, dataset: Dataset, train: TrainConfig) -> DeviceJPEGDecoder | None:
        """With `decode_on=device`, the image folder keeps JPEGs encoded for the step to decode."""
        if train.decode_on == "cpu":
            return None
        if train.decode_on != "device":
            raise ValueError(f"unknown train.decode_on '{train.decode_on}': choose cpu or device")
        if train.augment_on != "device":
            raise ValueError("train.decode_on=device needs train.augment_on=device (the workers then only read bytes)")
        folder = folder_dataset(dataset)
        if folder is not None:
            folder.keep_jpeg_encoded = True
        return DeviceJPEGDecoder(self.device)

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
        self.scaler.load_state_dict(ckpt["scaler"])
        self.step = int(ckpt["step"])
        self.skipped_steps = int(ckpt.get("skipped_steps", 0))
        set_rng_state(ckpt["rng"])
        self._unconfirmed = Path(path)
        self.guard.forget()
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
                self.dataset, self.collate, self.cfg.batch_size, self.cfg.num_workers, self.cfg.seed,
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

    def _prepare(self, batch: Any, micro: int) -> Any:
        """Move a micro-batch to the device; with device-side augmentation, augment it there.

        The augmentation generator is seeded by (seed, step, rank, micro-batch), so a resumed
        run draws the same views.
        """
        batch = self._to_device(batch)
        if self.device_augment is None:
            return batch
        images, labels = batch
        if self.device_decode is not None:
            images = self.device_decode(images)
        seed = sample_seed(self.cfg.seed, self.step, rank() * self.cfg.accum_steps + micro)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        with torch.no_grad():
            return self.device_augment(images, generator), labels

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
            with self.parallel.gradient_sync(sync), self._autocast():
                out = self.parallel.training_step(self._prepare(batch, i), ctx)
            finite &= torch.isfinite(out.loss.detach())
            with self.parallel.gradient_sync(sync):
                self.scaler.scale(out.loss / len(micro_batches)).backward()
            for key, value in {"loss": out.loss, **out.metrics}.items():
                value = value.detach() if isinstance(value, torch.Tensor) else value
                sums[key] = sums.get(key, 0.0) + value / len(micro_batches)
        self.scaler.unscale_(self.optimizer)
        verdict = self.guard.verdict(finite)  # the step's one host-device sync
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
        decode = {} if self.device_decode is None else {
            "decode_host_fallbacks": self.device_decode.host_fallbacks, "decode_replaced": self.device_decode.replaced}
        return {**sums, "lr": lr, "weight_decay": wd, "skipped_steps": self.skipped_steps, **decode}

    def _handle_signal(self, signum: int, _frame: Any) -> None:
        """First stop signal: finish the current step, save, stop. A second Ctrl-C aborts."""
        if self._stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self._stop_signal is None:
            log.warning("%s: stopping after this step (press Ctrl-C again to abort without saving)",
                        signal.Signals(signum).name)
        self._stop_signal = signum

    def _stop_agreed(self) -> bool:
        """Did a stop signal reach any rank? Ranks stop at the same step (under torchrun one
        all-reduce of a flag per step: a signal reaches ranks at slightly different times)."""
        stop = self._stop_signal is not None
        if world_size() == 1:
            return stop
        return bool(all_reduce_sum(torch.tensor(float(stop), device=self.device)).item())

    def fit(self) -> None:
        """Train from `self.step` to the end; SIGINT, SIGTERM, SIGHUP save a resumable checkpoint.

        A signal already set to be ignored (`nohup` ignores SIGHUP) stays ignored. Data-loader
        workers ignore these signals (`StopSignalSafeLoader`), so one sent to the whole process
        group reaches the trainer only; the workers are ended here.
        """
        if is_main_process():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_run_config(self.run_dir, self.config)  # a library-built run: config.yaml beside the checkpoints
        writer = MetricWriter(self.run_dir, self.cfg.tensorboard, enabled=is_main_process(),
                              wandb_project=self.cfg.wandb_project if self.cfg.wandb else None, config=self.config)
        handlers = {}
        for sig in STOP_SIGNALS:
            try:
                if signal.getsignal(sig) != signal.SIG_IGN:
                    handlers[sig] = signal.signal(sig, self._handle_signal)
            except ValueError:  # not the main thread: leave signals alone
                pass
        try:
            self._fit(writer)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            if self._loader is not None:
                self._loader.close()
                self._loader = None
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
                    if "teacher_temp" in metrics:
                        shown["t_temp"] = f"{metrics['teacher_temp']:.3f}"
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
            if self.guard.state_bad(collective=True):  # every rank is here: the last update's check is final
                self._diverged(self._bad_update_reason(self.step - 1))
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
        if self.parallel.sharded and self.step % self.cfg.log_every:
            due_by_time = False  # FSDP ranks agree on time-based saves at log steps only (a broadcast)
        if (every and self.step % every == 0) or self.parallel.agree(due_by_time):
            self.save()
