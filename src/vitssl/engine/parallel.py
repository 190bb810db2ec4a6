"""Data parallelism for the trainer: torch DDP, or torch FSDP (full sharding), set by `train.strategy`.

The trainer never talks to DDP or FSDP directly; it asks a `ParallelStep` for the step, for
gradient-sync control during accumulation and for full (unsharded) state dicts. Without a
process group every call is the plain single-process path.

Why the pieces are as they are:
- DDP and FSDP hook a module's `forward`, but a method's step is `training_step(batch, ctx)`.
  `TrainingStepModule` is a thin module whose forward *is* that call, so the whole step
  (teacher and student forwards, loss) runs inside one wrapped forward. The teacher's
  parameters have `requires_grad=False`, so DDP neither buckets nor all-reduces them.
- `broadcast_buffers=False`: the buffers that matter (DINO-style centers) are all-reduced by
  the losses themselves (`vitssl.distributed.all_reduce_mean`), and BatchNorm running stats
  are not used in training mode; re-broadcasting rank 0's buffers every step would only cost.
- `find_unused_parameters`: DDP by default expects every trainable parameter to get a gradient
  every step. EsViT's region head gets none before `region_start_epoch` (and never when
  `region_weight == 0`); such a method sets `MethodBase.find_unused_parameters = True`
  (or set `train.find_unused_parameters=true`), which makes DDP walk the autograd graph each
  step to mark the unused ones ready (a small cost, so it is off unless needed).
- BatchNorm in heads becomes `SyncBatchNorm` (as DINO does), so statistics are those of the
  global batch. torch's SyncBatchNorm runs on GPUs only; on CPU the heads keep per-rank
  BatchNorm and a warning says so.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any, Iterator

import torch
from torch import nn

from vitssl.distributed import is_distributed, is_main_process
from vitssl.engine.checkpoint import load_matching_state
from vitssl.engine.logging import log
from vitssl.engine.protocol import StepContext, StepOutput, optional_member

STRATEGIES = ("ddp", "fsdp")


class TrainingStepModule(nn.Module):
    """`forward(batch, ctx)` runs `method.training_step(batch, ctx)`: the module DDP/FSDP wrap."""

    def __init__(self, method: nn.Module) -> None:
        super().__init__()
        self.method = method

    def forward(self, batch: Any, ctx: StepContext) -> tuple[torch.Tensor, dict[str, Any]]:
        out = self.method.training_step(batch, ctx)
        return out.loss, out.metrics


def convert_sync_batchnorm(method: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm -> SyncBatchNorm on CUDA (in place); on CPU keep BatchNorm and warn."""
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in method.modules())
    if not has_bn:
        return method
    if device.type != "cuda":
        if is_main_process():
            log.warning("torch's SyncBatchNorm needs GPUs: on CPU each rank normalises BatchNorm (heads, ResNet/CvT backbones) "
                        "with its own batch only")
        return method
    return nn.SyncBatchNorm.convert_sync_batchnorm(method)


def _is_shard_unit(module: nn.Module) -> bool:
    """FSDP units: transformer blocks (ViT, Swin, MAE decoder) and projection heads."""
    name = type(module).__name__
    return name.endswith("Block") or name.endswith("Head")


def shard_fully(step_module: TrainingStepModule) -> None:
    """FSDP with full sharding: every block and head is one unit, the rest belongs to the root.

    Uses torch's `fully_shard` (parameters become DTensors sharded on dim 0;
    `reshard_after_forward=True` is FULL_SHARD). Student and teacher are sharded the same way,
    so the EMA update runs shard against shard with no communication.
    """
    from torch.distributed.fsdp import fully_shard

    units = [m for m in step_module.method.modules() if _is_shard_unit(m) and any(True for _ in m.parameters())]
    outermost = [m for m in units if not any(m is not u and m in set(u.modules()) for u in units)]
    for module in outermost:
        fully_shard(module, reshard_after_forward=True)
    fully_shard(step_module, reshard_after_forward=True)


def _no_buffer_sync() -> dict[str, bool]:
    """DDP's switch for "do not broadcast buffers before each forward" (renamed in newer torch)."""
    from torch.nn.parallel import DistributedDataParallel

    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


class ParallelStep:
    """The step to run, and how gradients and state cross ranks, for one strategy."""

    def __init__(self, method: nn.Module, device: torch.device, strategy: str = "ddp",
                 find_unused_parameters: bool = False, compile: bool = False, precision: str = "fp32") -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown train.strategy '{strategy}': choose one of {STRATEGIES}")
        self.method = method
        self.strategy = strategy if is_distributed() else "single"
        self.sharded = self.strategy == "fsdp"
        step: nn.Module = TrainingStepModule(method)
        if self.strategy == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            convert_sync_batchnorm(method, device)
            find_unused = find_unused_parameters or bool(optional_member(method, "find_unused_parameters"))
            step = DistributedDataParallel(step, find_unused_parameters=find_unused, **_no_buffer_sync())
        elif self.sharded:
            if precision == "fp16":
                raise ValueError("train.strategy=fsdp does not support train.precision=fp16 (gradient scaler): "
                                 "use bf16")
            convert_sync_batchnorm(method, device)
            shard_fully(step)
        if compile:
            step.compile()
        self.module = step

    def training_step(self, batch: Any, ctx: StepContext) -> StepOutput:
        loss, metrics = self.module(batch, ctx)
        return StepOutput(loss, metrics)

    @contextlib.contextmanager
    def gradient_sync(self, enabled: bool) -> Iterator[None]:
        """Skip the cross-rank gradient reduction inside (non-final accumulation micro-batches)."""
        if enabled or self.strategy == "single":
            yield
        elif self.strategy == "ddp":
            with self.module.no_sync():
                yield
        else:
            self.module.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                self.module.set_requires_gradient_sync(True)

    # -- state: full (unsharded) tensors, identical in form whatever the strategy ------------
    def method_state_dict(self) -> dict[str, Any]:
        """The method's full state dict; with FSDP a collective (call on every rank)."""
        if not self.sharded:
            return self.method.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(self.method, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def load_method_state(self, state: dict[str, Any]) -> None:
        """Load a full state dict, refusing another architecture with the keys named."""
        if not self.sharded:
            load_matching_state(self.method, state, "method")
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(self.method, state, options=StateDictOptions(full_state_dict=True))

    def optimizer_state_dict(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        if not self.sharded:
            return optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        return get_optimizer_state_dict(self.method, optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        if not self.sharded:
            optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        set_optimizer_state_dict(self.method, optimizer, state, options=StateDictOptions(full_state_dict=True))

    def agree(self, flag: bool) -> bool:
        """Rank 0's decision on every rank (saves are collectives: FSDP gathers, every rank reads
        the step flags first); `flag` itself in a single process."""
        if not is_distributed():
            return flag
        import torch.distributed as dist

        box = [flag]
        dist.broadcast_object_list(box, src=0)
        return bool(box[0])
