"""Time the whole pre-training step per method: input, forward, loss, backward, optimizer, EMA.

    vitssl benchmark step                                   # all methods, GPU, synthetic + JPEG input
    vitssl benchmark step --methods dino --input jpeg --aug cpu --workers 15
    vitssl benchmark step --device cpu --steps 2 --tiny --json out.json   # smoke test

(`python benchmarks/pretrain_step.py ...` takes the same options.)

Configurations follow docs/performance.md: DINO ViT-S/16,
EsViT Swin-T/W7 (view + region loss), SelfPatch ViT-S/16 at batch 64 with 2x224 + 8x96 crops and
K = 65536; MAE-Lite ViT-Tiny at batch 256, 224 px, mask ratio 0.75. Each is the packaged preset
built with `vitssl.methods.build_method`, stepped with the engine's pieces in the trainer's
order (autocast forward, backward, clipping, `before_optimizer_step`, optimizer, `after_optimizer_step`
= EMA and centers), without the trainer's logging and finite-loss check.

Inputs: `synthetic` = random views already on the device (as the reference rows in docs/performance.md); `jpeg` = a pool of
photo-like images JPEG-encoded in memory, fed through the trainer's own input pipeline
(`vitssl.data.pipeline.InputPipeline`) and so decoded and augmented every step, either on the
device (`--aug gpu`: `train.augment_on=device` and `decode_on=device`) or by DataLoader workers
with the method's CPU PIL pipeline (`--aug cpu`). Reported per row: images/s over the timed steps, median step
time, data time per step (host time blocked on the loader for `--aug cpu`; device time of
decoding + augmentation for `--aug gpu`), peak device memory, model FLOPs per image (torch's
FlopCounterMode over one step) and MFU = FLOPs / step time / measured dense matmul rate.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
import warnings
from contextlib import nullcontext
from typing import Any, Callable, Iterator

import torch
import torchvision.transforms.v2.functional as TF
from torch import nn
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

from vitssl.bench.step_options import add_arguments, benchmark_setups, check_arguments
from vitssl.bench.throughput import count_call_flops
from vitssl.config import load_config, to_objects
from vitssl.data.device_decode import EncodedJPEG
from vitssl.data.pipeline import InputPipeline, move_to
from vitssl.engine.optim import build_optimizer, clip_gradients, decay_groups
from vitssl.engine.protocol import StepContext
from vitssl.engine.schedules import scaled_lr
from vitssl.engine.train_config import TrainConfig
from vitssl.methods import build_method, method_class, method_configs

# torchvision 0.29 deprecates torchvision.io's codecs in favour of TorchCodec; they still work.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities", category=DeprecationWarning)


# --tiny: seconds on a CPU, shapes and plumbing only: the tests' tiny backbone (16 px, patch 4)
# and each method's own `tiny_overrides()` for it.
TINY_BACKBONE = ["backbone.patch_size=4", "backbone.img_size=16", "backbone.embed_dim=32", "backbone.depth=2",
                 "backbone.num_heads=2", "backbone.drop_path_rate=0.0"]
SETUPS = benchmark_setups()

FIELDS = ("method", "input", "aug", "batch", "images_per_s", "step_ms", "data_ms", "peak_gib", "gflop_per_image",
          "mfu", "precision", "device")


# -- method and step ---------------------------------------------------------------------------

def build(name: str, batch_size: int | None, tiny: bool) -> tuple[nn.Module, Any, int]:
    """(method, optimisation config, batch size) for one setup, from its packaged preset."""
    setup = SETUPS[name]
    overrides = list(setup.overrides)
    if tiny:
        method = method_class(str(load_config(setup.preset, overrides, method_configs()).method.name))
        overrides += [*TINY_BACKBONE, *method.tiny_overrides()]  # type: ignore[attr-defined]
    cfg = to_objects(load_config(setup.preset, overrides, method_configs()))
    batch = batch_size or (4 if tiny else setup.batch_size)
    return build_method(cfg.method, cfg.backbone), cfg.optim, batch


def compile_networks(method: nn.Module) -> None:
    """`torch.compile` backbones, heads and decoders in place (parameter names unchanged, so EMA pairs them)."""
    for name, module in method.named_modules():
        if name.split(".")[-1] in {"backbone", "encoder", "decoder", "head", "region_head", "patch_head"}:
            module.compile()


class Stepper:
    """One optimizer step in the trainer's order, built from the engine's functions."""

    def __init__(self, method: nn.Module, optim_cfg: Any, batch: int, device: torch.device, precision: str) -> None:
        self.method, self.cfg = method, optim_cfg
        groups = decay_groups(method.trainable_parameters(), optim_cfg.no_weight_decay_names)
        self.params = [p for g in groups for p in g["params"]]
        self.optimizer = build_optimizer(groups, optim_cfg, device)
        for g in self.optimizer.param_groups:  # steady-state values; the schedules are not under test
            g["lr"] = scaled_lr(optim_cfg.lr, batch)
            g["weight_decay"] = optim_cfg.weight_decay if g.get("apply_weight_decay", True) else 0.0
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else nullcontext
        # Past DINO's one-epoch last-layer freeze and EsViT's region start: the steady-state step.
        self.ctx = StepContext(step=1000, epoch=1, steps_per_epoch=1000, total_steps=100_000, epochs=100)

    def __call__(self, batch: Any) -> torch.Tensor:
        self.method.train()
        with self.autocast():
            out = self.method.training_step(batch, self.ctx)
        out.loss.backward()
        clip_gradients(self.params, self.cfg.clip_grad, self.cfg.clip_mode)
        self.method.before_optimizer_step(self.ctx)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.method.after_optimizer_step(self.ctx)
        return out.loss.detach()


def count_step_flops(step: Callable[[Any], Any], batch: Any, method: nn.Module) -> int:
    """FLOPs (multiply-add = 2) of one step; fused attention is switched to the explicit path while
    counting, as `vitssl.bench.throughput.count_flops` does, since the counter misses the CPU kernel."""
    return count_call_flops(lambda: step(batch), method)


def matmul_flops_per_s(device: torch.device, tiny: bool) -> tuple[float, str]:
    """Measured dense matmul rate: bf16 8192^3 on a GPU, fp32 on a CPU (smaller)."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else ((256 if tiny else 2048), torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    iters = 2 if tiny else 10
    a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        a @ b
    sync(device)
    return 2 * n**3 * iters / (time.perf_counter() - start), str(dtype).removeprefix("torch.")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- inputs ------------------------------------------------------------------------------------

def photo_like(n: int, height: int, width: int, seed: int = 0) -> list[torch.Tensor]:
    """uint8 (3, H, W) images with smooth colour fields plus fine noise: JPEG sizes like photos'."""
    g = torch.Generator().manual_seed(seed)
    images = []
    for _ in range(n):
        coarse = torch.rand(1, 3, 6, 8, generator=g)
        smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)[0]
        detail = 0.08 * torch.randn(3, height, width, generator=g)
        images.append(((smooth + detail).clamp(0, 1) * 255).to(torch.uint8))
    return images


def jpeg_pool(n: int, height: int, width: int, quality: int = 90) -> list[torch.Tensor]:
    return [encode_jpeg(img, quality=quality) for img in photo_like(n, height, width)]


class JPEGDataset(Dataset):
    """(image, 0) from in-memory JPEG bytes, as an image folder gives them: a PIL image, or with
    `keep_jpeg_encoded` (set by the pipeline for `train.decode_on=device`) the bytes themselves."""

    def __init__(self, pool: list[torch.Tensor]) -> None:
        self.pool = pool
        self.keep_jpeg_encoded = False

    def __len__(self) -> int:
        return len(self.pool)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        if self.keep_jpeg_encoded:
            return EncodedJPEG(self.pool[index], f"pool[{index}]"), 0
        return TF.to_pil_image(decode_jpeg(self.pool[index], mode=ImageReadMode.RGB)), 0


def synthetic_batch(method: nn.Module, batch: int, device: torch.device) -> Any:
    """The method's own random batch (`MethodBase.synthetic_batch`), on the device."""
    return move_to(method.synthetic_batch(batch, torch.Generator().manual_seed(0)), device)


class PipelineInput:
    """The trainer's own input pipeline (`InputPipeline`) over a JPEG pool, one micro-batch a call.

    `--aug cpu`: `train.augment_on=cpu` (workers decode and run the method's PIL pipeline);
    `--aug gpu`: `augment_on=device` + `decode_on=device` (the bytes are read in the main
    process, as the pool is in memory; the step decodes and augments the batch on the device).
    """

    def __init__(self, method: nn.Module, pool: list[torch.Tensor], batch: int, device: torch.device, aug: str,
                 workers: int) -> None:
        on = "device" if aug == "gpu" else "cpu"
        train = TrainConfig(batch_size=batch, num_workers=workers if on == "cpu" else 0, seed=0, device=str(device),
                            augment_on=on, decode_on=on)
        self.pipeline = InputPipeline(method, JPEGDataset(pool), train, device)
        self.step, self.epoch = 0, 0
        self.batches = self._next_epoch()

    def _next_epoch(self) -> Iterator[Any]:
        self.pipeline.set_epoch(self.epoch)
        self.epoch += 1
        return iter(self.pipeline)

    def __call__(self) -> Any:
        try:
            batch = next(self.batches)
        except StopIteration:
            self.batches = self._next_epoch()
            batch = next(self.batches)
        self.step += 1
        return self.pipeline.to_device(batch, self.step - 1, 0)

    def close(self) -> None:
        self.pipeline.close()


# -- timing ------------------------------------------------------------------------------------

class Clock:
    """Interval timer: CUDA events on a GPU (read once at the end, no per-step sync), else wall time."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def mark(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def seconds(self, start: Any, end: Any) -> float:
        return start.elapsed_time(end) / 1000 if self.cuda else end - start


def run_one(name: str, source: str, args: argparse.Namespace, device: torch.device, precision: str,
            matmul_rate: float) -> dict[str, Any]:
    torch.manual_seed(0)
    method, optim_cfg, batch = build(name, args.batch_size, args.tiny)
    method.to(device)
    if args.compile:
        compile_networks(method)
    step = Stepper(method, optim_cfg, batch, device, precision)
    if source == "synthetic":
        fixed = synthetic_batch(method, batch, device)
        row = time_steps(step, lambda: fixed, False, method, batch, device, args, matmul_rate)
    else:
        pool = jpeg_pool(max(args.images, 2 * batch), *args.jpeg_size)
        inputs = PipelineInput(method, pool, batch, device, args.aug, args.workers)
        try:
            row = time_steps(step, inputs, args.aug == "cpu", method, batch, device, args, matmul_rate)
        finally:
            inputs.close()
    return {
        "method": SETUPS[name].label if not args.tiny else f"{SETUPS[name].label} (tiny)",
        "input": source, "aug": "-" if source == "synthetic" else args.aug, "batch": batch, **row,
        "precision": precision,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }


def time_steps(step: Stepper, next_batch: Callable[[], Any], host_blocking: bool, method: nn.Module, batch: int,
               device: torch.device, args: argparse.Namespace, matmul_rate: float) -> dict[str, Any]:
    """Warm up, count one step's FLOPs, time `args.steps` steps: the row's measured fields. Data
    time is host time blocked on the loader when `host_blocking`, else device time of the input."""
    for _ in range(args.warmup):
        step(next_batch())
    flops = count_step_flops(step, next_batch(), method)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    clock = Clock(device)
    marks, data_host = [], 0.0
    begin = time.perf_counter()
    for _ in range(args.steps):
        start = clock.mark()
        host = time.perf_counter()
        data = next_batch()
        data_host += time.perf_counter() - host
        ready = clock.mark()
        step(data)
        marks.append((start, ready, clock.mark()))
    sync(device)
    total = time.perf_counter() - begin
    step_s = statistics.median(clock.seconds(s, e) for s, _, e in marks)
    data_s = data_host / args.steps if host_blocking else statistics.mean(clock.seconds(s, r) for s, r, _ in marks)
    return {
        "images_per_s": batch * args.steps / total, "step_ms": 1000 * step_s, "data_ms": 1000 * data_s,
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "gflop_per_image": flops / batch / 1e9, "mfu": flops / step_s / matmul_rate if step_s > 0 else math.nan,
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    def cell(value: Any, key: str) -> str:
        if value is None:
            return "-"
        if key == "mfu":
            return f"{100 * value:.1f}%"
        if isinstance(value, float):
            return f"{value:.0f}" if key == "images_per_s" else f"{value:.2f}"
        return str(value)

    lines = ["| " + " | ".join(FIELDS) + " |", "|" + "---|" * len(FIELDS)]
    lines += ["| " + " | ".join(cell(r[k], k) for k in FIELDS) + " |" for r in rows]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return check_arguments(args)
    except ValueError as e:
        p.error(str(e))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return run(parse_args(argv))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Time every (method, input) pair of `args`; print the table, return (and maybe save) the JSON."""
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    precision = args.precision if args.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    rate, rate_dtype = matmul_flops_per_s(device, args.tiny)
    rows = [run_one(name, source, args, device, precision, rate)
            for name in args.methods.split(",") for source in args.input.split(",")]
    result = {"device": rows[0]["device"] if rows else str(device), "torch": torch.__version__,
              "matmul_tflops": rate / 1e12, "matmul_dtype": rate_dtype, "compile": args.compile,
              "steps": args.steps, "warmup": args.warmup, "tiny": args.tiny, "rows": rows}
    print(format_table(rows))
    print(f"matmul peak measured: {rate / 1e12:.1f} TFLOP/s ({rate_dtype}); MFU = model FLOPs / step time / that")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result
