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
photo-like images JPEG-encoded in memory, decoded and augmented every step, either on the device
(`--aug gpu`: the trainer's `train.decode_on=device` decoder + the method's device augmentation) or by DataLoader workers with the
CPU PIL pipeline (`--aug cpu`). Reported per row: images/s over the timed steps, median step
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
from typing import Any, Callable

import torch
import torchvision.transforms.v2.functional as TF
from torch import nn
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

from vitssl.bench.step_options import SETUPS, add_arguments, check_arguments
from vitssl.bench.throughput import count_call_flops
from vitssl.config import load_config, to_objects
from vitssl.data.device_decode import DeviceJPEGDecoder, EncodedJPEG
from vitssl.data.loaders import AugmentedDataset, build_train_loader
from vitssl.engine.optim import build_optimizer, clip_gradients, decay_groups
from vitssl.engine.protocol import StepContext
from vitssl.engine.schedules import scaled_lr
from vitssl.methods import build_method, method_configs

# torchvision 0.29 deprecates torchvision.io's codecs in favour of TorchCodec; they still work.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities", category=DeprecationWarning)


_TINY_HEADS = [f"{k}={v}" for k, v in (("out_dim", 64), ("hidden_dim", 32), ("bottleneck_dim", 16))]
_TINY_CROPS = ["method.crops.global_crops_size=32", "method.crops.local_crops_size=16",
               "method.crops.local_crops_number=2"]
_TINY_VIT = ["backbone.patch_size=8", "backbone.img_size=32", "backbone.embed_dim=32", "backbone.depth=2",
             "backbone.num_heads=2", "backbone.drop_path_rate=0.0"]
TINY_OVERRIDES = {  # seconds on a CPU: shapes and plumbing only
    "dino": [*_TINY_VIT, *_TINY_CROPS, *[f"method.head.{kv}" for kv in _TINY_HEADS]],
    "esvit": ["backbone.embed_dim=16", "backbone.depth=1", "backbone.num_heads=1", "backbone.img_size=32",
              "backbone.drop_path_rate=0.0", *_TINY_CROPS,
              *[f"method.{h}.{kv}" for h in ("head", "region_head") for kv in _TINY_HEADS]],
    "selfpatch": [*_TINY_VIT, *_TINY_CROPS, *[f"method.{h}.{kv}" for h in ("head", "patch_head") for kv in _TINY_HEADS]],
    "mae-lite": [*_TINY_VIT, "method.decoder.depth=1", "method.decoder.embed_dim=16", "method.decoder.num_heads=2",
                 "method.crop.size=32"],
}

FIELDS = ("method", "input", "aug", "batch", "images_per_s", "step_ms", "data_ms", "peak_gib", "gflop_per_image",
          "mfu", "precision", "device")


# -- method and step ---------------------------------------------------------------------------

def build(name: str, batch_size: int | None, tiny: bool) -> tuple[nn.Module, Any, int]:
    """(method, optimisation config, batch size) for one setup, from its packaged preset."""
    setup = SETUPS[name]
    overrides = [*setup.overrides, *(TINY_OVERRIDES[name] if tiny else [])]
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
    """(PIL image, 0) decoded from in-memory JPEG bytes: what an image folder gives the CPU pipeline."""

    def __init__(self, pool: list[torch.Tensor]) -> None:
        self.pool = pool

    def __len__(self) -> int:
        return len(self.pool)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return TF.to_pil_image(decode_jpeg(self.pool[index], mode=ImageReadMode.RGB)), 0


def synthetic_batch(method: nn.Module, batch: int, device: torch.device) -> Any:
    labels = torch.zeros(batch, dtype=torch.long, device=device)
    if hasattr(method, "multicrop"):
        return [torch.randn(batch, 3, s, s, device=device) for s in method.multicrop.view_sizes], labels
    size = method.transform.cfg.size
    return torch.randn(batch, 3, size, size, device=device), labels


class DeviceInput:
    """Decode a batch of JPEGs on the device and augment it there."""

    def __init__(self, method: nn.Module, pool: list[torch.Tensor], batch: int, device: torch.device, seed: int = 0):
        self.method, self.pool, self.batch, self.device = method, pool, batch, device
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.augment = method.device_transform()  # GPUMultiCrop (DINO family) or MAEDeviceCrop
        self.decode = DeviceJPEGDecoder(device)  # the trainer's train.decode_on=device path
        self.position = 0

    def __call__(self) -> Any:
        picks = [self.pool[(self.position + i) % len(self.pool)] for i in range(self.batch)]
        self.position += self.batch
        images = self.decode([EncodedJPEG(data, f"pool[{i}]") for i, data in enumerate(picks)])
        labels = torch.zeros(self.batch, dtype=torch.long, device=self.device)
        return self.augment(images, self.generator), labels


class LoaderInput:
    """CPU workers: decode with torchvision, augment with the method's PIL pipeline, collate; then copy."""

    def __init__(self, method: nn.Module, pool: list[torch.Tensor], batch: int, device: torch.device, workers: int):
        dataset = AugmentedDataset(JPEGDataset(pool), method.train_transform(), seed=0)
        self.loader = build_train_loader(dataset, method.collate, batch, workers, seed=0,
                                         pin_memory=device.type == "cuda")
        self.device, self.epoch = device, 0
        self.iterator = self._epoch()

    def _epoch(self) -> Any:
        self.loader.batch_sampler.set_epoch(self.epoch)
        self.epoch += 1
        return iter(self.loader)

    def __call__(self) -> Any:
        try:
            batch = next(self.iterator)
        except StopIteration:
            self.iterator = self._epoch()
            batch = next(self.iterator)
        return to_device(batch, self.device)


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    return batch


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
    pool_size = max(args.images, 2 * batch)
    if source == "synthetic":
        fixed = synthetic_batch(method, batch, device)
        next_batch, host_blocking = (lambda: fixed), False
    elif args.aug == "gpu":
        next_batch, host_blocking = DeviceInput(method, jpeg_pool(pool_size, *args.jpeg_size), batch, device), False
    else:
        pool = jpeg_pool(pool_size, *args.jpeg_size)
        next_batch, host_blocking = LoaderInput(method, pool, batch, device, args.workers), True
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
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {
        "method": SETUPS[name].label if not args.tiny else f"{SETUPS[name].label} (tiny)",
        "input": source, "aug": "-" if source == "synthetic" else args.aug, "batch": batch,
        "images_per_s": batch * args.steps / total, "step_ms": 1000 * step_s, "data_ms": 1000 * data_s,
        "peak_gib": peak, "gflop_per_image": flops / batch / 1e9,
        "mfu": flops / step_s / matmul_rate if step_s > 0 else math.nan,
        "precision": precision, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
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
