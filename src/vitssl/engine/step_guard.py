"""Is a training step good? Finiteness of its loss, its gradients and the state its update leaves.

A step is good only if every micro-batch's loss, every gradient (after unscaling) and, after
the update, every parameter, buffer and optimizer moment is finite. The checks run on the
device and end in one flag tensor per step, all-reduced so every rank decides alike. The state
an update leaves is checked on the device right after the update and folded into the next
step's flags (or read at the next save / epoch end), so it costs no sync of its own.

Either the flags are read at once (`verdict`: one host-device sync per step), or, where the
trainer can skip an update on the device (`decides_on_device`), they gate the update there and
are queued (`queue`) and read in one sync on log steps, before saves and at epoch ends
(`read_queued`).
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, NamedTuple

import torch
from torch import nn

from vitssl.distributed import all_reduce_sum
from vitssl.engine.protocol import optional_member


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """The rank's own slice of a sharded (FSDP DTensor) tensor; the tensor itself otherwise."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def any_nonfinite(tensors: Iterable[torch.Tensor], device: torch.device) -> torch.Tensor:
    """A 0-dim bool tensor on `device`: does any of `tensors` hold NaN or +-Inf (or overflow)?

    Tests each tensor's L2 norm (one multi-tensor kernel per dtype, the kernel gradient clipping
    uses; several times faster on CPU than the max-abs norm): NaN and Inf propagate into it, and
    so does a square that overflows, so float32 entries of about 1e19 or more count as non-finite
    too, weights that large being destroyed anyway. Nothing is read to the host.
    """
    groups: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for t in tensors:
        t = _local(t).detach()
        if t.is_floating_point() and t.numel() > 0:
            groups.setdefault((t.dtype, t.device), []).append(t)
    flags = [~torch.stack(torch._foreach_norm(ts, 2.0)).isfinite().all() for ts in groups.values()]
    if not flags:
        return torch.zeros((), dtype=torch.bool, device=device)
    return torch.stack([f.to(device) for f in flags]).any()


def _named_tensors(tree: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(tree, torch.Tensor):
        yield prefix, tree
    elif isinstance(tree, dict):
        for k, v in tree.items():
            yield from _named_tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            yield from _named_tensors(v, f"{prefix}.{i}" if prefix else str(i))


def first_nonfinite(tree: Any) -> str | None:
    """The name of the first floating tensor in a (nested) state dict that `any_nonfinite` flags.

    Reads to the host: for messages and checkpoint loads, not for the per-step path.
    """
    for name, t in _named_tensors(tree):
        t = _local(t).detach()
        if t.is_floating_point() and t.numel() and not bool(torch.linalg.vector_norm(t).isfinite()):
            return name
    return None


class Verdict(NamedTuple):
    """What was wrong with a step (all False: a good step) and with the state before it."""

    loss: bool  # a micro-batch's loss was NaN/Inf on some rank
    grads: bool  # a gradient was NaN/Inf after unscaling (not checked under fp16: the scaler's job)
    state: bool  # the previous update left a NaN/Inf parameter, buffer or optimizer moment
    stop: bool = False  # a stop signal reached some rank (read in the same all-reduce: no second one)

    @property
    def bad(self) -> bool:
        return self.loss or self.grads or self.state


def decides_on_device(method: nn.Module, optimizer: str, precision: str, sharded: bool) -> bool:
    """Can a bad step's update be skipped on the device, with no host read of its flags?

    Needs torch's fused AdamW, which takes a found-inf flag as under GradScaler and then leaves
    parameters, moments and step count bitwise alone (fused SGD would start its momentum from a
    skipped first step's gradients); not fp16, whose gradient scaler hands the optimizer its own
    flag; not FSDP (fused kernels on sharded parameters are untested here); and a method whose
    `after_optimizer_step` gates its state with `ctx.applied` (`MethodBase.gates_state_updates`).
    Otherwise the trainer reads each step's flags on the host (one sync per step).
    """
    return (optimizer == "adamw" and precision != "fp16" and not sharded
            and bool(optional_member(method, "gates_state_updates")))


class StepGuard:
    """Device-side finiteness checks for one trainer, plus a copy of the buffers to undo a forward.

    Per step: `snapshot_buffers()` before the forward passes (BatchNorm running statistics and
    counters, centers: small), `verdict(loss_finite)` after the backward passes (the step's one
    sync), `restore_buffers()` if the step is skipped, `track_state()` after an applied update.
    Decided on the device instead: `reduced_flags` (no sync), `restore_buffers_unless(applied)`,
    `track_state()` after every update, `queue` the flags; `read_queued` at the next read.
    """

    def __init__(self, method: nn.Module, optimizer: torch.optim.Optimizer, params: list[nn.Parameter],
                 device: torch.device, check_grads: bool) -> None:
        self.method, self.optimizer, self.params = method, optimizer, params
        self.device, self.check_grads = device, check_grads
        self._buffers: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._pending: torch.Tensor | None = None  # state flag of the last update, not yet read
        self._queued: list[tuple[int, torch.Tensor, torch.Tensor | float]] = []  # (step, flags, loss), unread
        # constant flags, chosen on the host: a Python bool becomes a tensor without a copy per step
        self._false = torch.zeros((), dtype=torch.bool, device=device)
        self._true = torch.ones((), dtype=torch.bool, device=device)

    def snapshot_buffers(self) -> None:
        with torch.no_grad():
            self._buffers = [(b, b.clone()) for b in self.method.buffers()]

    def restore_buffers(self) -> None:
        """Undo what the skipped step's forward passes wrote into buffers (e.g. BatchNorm stats)."""
        with torch.no_grad():
            for buffer, saved in self._buffers:
                buffer.copy_(saved)
        self._buffers = []

    def state_tensors(self) -> Iterator[torch.Tensor]:
        """Everything an update changes and a checkpoint keeps: parameters (student and teacher),
        buffers, optimizer moments (not 0-dim entries such as Adam's step count)."""
        yield from self.method.parameters()
        yield from self.method.buffers()
        for state in self.optimizer.state.values():
            yield from (v for v in state.values() if isinstance(v, torch.Tensor) and v.dim() > 0)

    def restore_buffers_unless(self, applied: torch.Tensor) -> None:
        """`restore_buffers` decided on the device: each buffer keeps what the forward passes wrote
        where `applied` (0-dim bool) is True, else gets its copy back; no sync."""
        with torch.no_grad():
            for buffer, saved in self._buffers:
                buffer.copy_(torch.where(applied, buffer, saved))
        self._buffers = []

    def forget(self) -> None:
        """Drop what was queued about the state (it was just replaced, e.g. by loading a checkpoint)."""
        self._pending, self._buffers, self._queued = None, [], []

    def track_state(self) -> None:
        """After an applied update: queue the check of the state it left (no sync)."""
        self._pending = any_nonfinite(self.state_tensors(), self.device)

    def flags(self, loss_finite: torch.Tensor, stop: bool = False) -> torch.Tensor:
        """The step's [loss bad, grads bad, previous state bad, stop asked] as a float device tensor."""
        grads = [p.grad for p in self.params if p.grad is not None] if self.check_grads else []
        pending = self._pending if self._pending is not None else self._false
        stop_flag = self._true if stop else self._false
        return torch.stack([~loss_finite, any_nonfinite(grads, self.device), pending, stop_flag]).float()

    def reduced_flags(self, loss_finite: torch.Tensor, stop: bool = False) -> torch.Tensor:
        """`flags` summed over ranks, left on the device (an all-reduce, no host read). `stop`
        (this rank saw a stop signal) travels in the same all-reduce, so ranks agree on stopping
        without a second collective per step."""
        flags = all_reduce_sum(self.flags(loss_finite, stop))
        self._pending = None
        return flags

    def verdict(self, loss_finite: torch.Tensor, stop: bool = False) -> Verdict:
        """The step's one host-device sync: every rank's flags, summed over ranks, read at once."""
        return Verdict(*(v > 0 for v in self.reduced_flags(loss_finite, stop).tolist()))

    def queue(self, step: int, flags: torch.Tensor, loss: torch.Tensor | float) -> None:
        """Keep step `step`'s reduced flags and loss on the device until `read_queued`."""
        self._queued.append((step, flags, loss))

    def read_queued(self) -> tuple[list[tuple[int, Verdict, float]], bool]:
        """One host-device sync (a collective: every rank calls it): the queued steps' verdicts and
        losses, oldest first, and whether the last update left a non-finite state. Clears both."""
        pending = self._pending if self._pending is not None else self._false
        parts = [all_reduce_sum(pending.float().reshape(1))]
        for _, flags, loss in self._queued:
            loss = loss.detach().float() if isinstance(loss, torch.Tensor) else torch.tensor(float(loss))
            parts += [flags, loss.to(flags.device).reshape(1)]
        values = torch.cat([p.to(self.device) for p in parts]).tolist()
        state_bad, rows = values[0] > 0, [values[1 + 5 * i:6 + 5 * i] for i in range(len(self._queued))]
        read = [(step, Verdict(*(v > 0 for v in row[:4])), row[4]) for (step, _, _), row in zip(self._queued, rows)]
        self._pending, self._queued = None, []
        return read, state_bad

    def state_bad(self, collective: bool) -> bool:
        """Did the last update leave a non-finite value? Read now (a sync). `collective`: every
        rank calls it and the answer is final; otherwise the flag stays queued for `verdict`."""
        if not collective:
            return self._pending is not None and bool(self._pending.item())
        flag = self._pending if self._pending is not None else torch.zeros((), dtype=torch.bool, device=self.device)
        self._pending = None
        return bool(all_reduce_sum(flag.float()).item())

    def first_nonfinite_name(self) -> str | None:
        """Which parameter or buffer is non-finite (this rank's view): for the message only."""
        named = {**dict(self.method.named_parameters()), **dict(self.method.named_buffers())}
        return first_nonfinite(named) or ("an optimizer moment" if first_nonfinite(
            [dict(s) for s in self.optimizer.state.values()]) else None)
