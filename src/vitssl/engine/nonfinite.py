"""How the trainer handles non-finite steps: skip them, keep a good checkpoint, stop going back to it.

A mixin of `Trainer` (it uses the trainer's optimizer, scaler, guard, run folder, `save` and
`resume`); kept apart so the training loop stays readable. What is checked, and why the run goes
back to a checkpoint rather than undoing an update in place: docs/fault-tolerance.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vitssl.distributed import is_main_process
from vitssl.engine.checkpoint import GOOD, LATEST
from vitssl.engine.good_checkpoint import promote, reset_to_good
from vitssl.engine.logging import log, to_float
from vitssl.engine.protocol import DiscardsPending
from vitssl.engine.step_guard import StepGuard, Verdict
from vitssl.engine.wording import counted

if TYPE_CHECKING:
    from vitssl.engine.optim import OptimConfig
    from vitssl.engine.parallel import ParallelStep


class TrainingDiverged(RuntimeError):
    """Non-finite losses or gradients for `max_nonfinite_steps` steps in a row, or an update that made
    the state non-finite: the run is reset to its last known good checkpoint (`checkpoint-good.pt`)."""


class NonFiniteSteps:
    """Skipping non-finite steps and stopping for divergence (mixed into `Trainer`)."""

    cfg: Any
    optim_cfg: OptimConfig
    run_dir: Path
    step: int
    steps_per_epoch: int
    skipped_steps: int
    method: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    parallel: ParallelStep
    guard: StepGuard
    _nonfinite_streak: int
    _unconfirmed: Path | None
    _stop_seen: bool

    if TYPE_CHECKING:
        def save(self, name: str = LATEST) -> Path | None: ...

        def resume(self, path: str | Path) -> None: ...

    def _confirm_latest(self) -> None:
        """A good step ran from the latest checkpoint: keep it as the last known good one."""
        if self._unconfirmed is not None and is_main_process():
            promote(self._unconfirmed, self.run_dir)
        self._unconfirmed = None

    def _ensure_good_checkpoint(self) -> None:
        """A run without a good checkpoint keeps the state it starts from as one: a resumed run its
        checkpoint, a fresh run its initial state, saved now (so its folder is resumable at once)."""
        exists = is_main_process() and (self.run_dir / GOOD).exists()
        if self.parallel.agree(exists):
            return
        if self._unconfirmed is None:
            self.save()
        self._confirm_latest()

    def _drop_step(self) -> None:
        """Undo what a step did before its update: gradients are zeroed, buffers the forward passes
        wrote (BatchNorm running statistics) restored, statistics a module accumulated for after the
        step dropped (any submodule that is `DiscardsPending`, e.g. DINO's `Center`)."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.update()  # fp16: clears this step's unscale record (and backs the scale off)
        self.guard.restore_buffers()
        for module in self.method.modules():
            if isinstance(module, DiscardsPending):
                module.discard_pending()

    def _skip_nonfinite_step(self, verdict: Verdict, loss: torch.Tensor | float) -> dict[str, float]:
        """Skip a step whose loss or gradients are NaN/Inf: no optimizer step, EMA or center update.

        The step counter still advances, so data order and schedules stay those of an
        uninterrupted run. After `train.max_nonfinite_steps` in a row, or at once if the previous
        update left NaN/Inf in the state, the run goes back to its good checkpoint and stops.
        """
        self._drop_step()
        self.step += 1
        self._count_skipped(self.step - 1, verdict, to_float(loss))
        return {"skipped_steps": self.skipped_steps}

    def _count_skipped(self, step: int, verdict: Verdict, value: float) -> None:
        """Count step `step` as skipped and warn; stop for divergence where the rules above say."""
        if verdict.state:
            self._diverged(self._bad_update_reason(step - 1))
        self.skipped_steps += 1
        self._nonfinite_streak += 1
        limit = max(1, self.cfg.max_nonfinite_steps)
        what = f"loss is {value}" if verdict.loss else f"gradients are not finite (loss {value})"
        log.warning("step %d: %s, step skipped (%d in a row, %d in total; stopping after %d in a row)",
                    step, what, self._nonfinite_streak, self.skipped_steps, limit)
        if self._nonfinite_streak >= limit:
            first = step + 1 - self._nonfinite_streak
            kind = f"loss was {value}" if verdict.loss else "gradients were not finite"
            self._diverged(f"{kind} at {counted(self._nonfinite_streak, 'step')} in a row ({first} to {step}; "
                           f"train.max_nonfinite_steps={self.cfg.max_nonfinite_steps})")

    def _settle_checks(self) -> None:
        """Read what the device decided about the steps since the last read (one sync; every rank
        calls it at the same step) and act on it as the per-step path does, step by step: count and
        warn about skipped steps, confirm the latest checkpoint after a good step, note a stop
        signal, stop for divergence (a streak, or a non-finite state left by an update)."""
        read, state_bad = self.guard.read_queued()
        for step, verdict, value in read:
            self._stop_seen = self._stop_seen or verdict.stop
            if verdict.bad:
                self._count_skipped(step, verdict, value)
            else:
                self._nonfinite_streak = 0
                self._confirm_latest()
        if state_bad:
            self._diverged(self._bad_update_reason(self.step - 1))

    def _bad_update_reason(self, step: int) -> str:
        where = self.guard.first_nonfinite_name() or "on another rank"
        return f"the update of step {step} left NaN/Inf or overflowing values in the state ({where})"

    def _diverged(self, reason: str) -> None:
        """Go back to the last known good checkpoint, in memory and as `checkpoint.pt`, and stop.

        The state in memory is not trusted: a finite but exploded update looks like a good one.
        """
        good = self.run_dir / GOOD
        if not good.exists():  # only when steps run outside fit(), which keeps one from the start
            raise TrainingDiverged(f"{reason}: no checkpoint precedes it; lower optim.lr and start again")
        self.resume(good)  # every rank: the state in memory is the good one again
        moved = reset_to_good(self.run_dir, self.step, self.steps_per_epoch) if is_main_process() else []
        aside = f" (newer checkpoints renamed *.diverged: {', '.join(moved)})" if moved else ""
        raise TrainingDiverged(
            f"{reason}: {self.run_dir / LATEST} is reset to {good} (step {self.step}, the newest checkpoint from "
            f"before the first bad step){aside}; lower optim.lr (now {self.optim_cfg.lr}), use train.precision=fp32 "
            "(or bf16 rather than fp16) so the head runs in float32, or lower the teacher temperature "
            f"(method.teacher_temp), then continue with `vitssl pretrain --resume {self.run_dir} optim.lr=...`"
        )
