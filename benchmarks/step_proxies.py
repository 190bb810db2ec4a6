"""CPU proxies of the host work a GPU step pays for: operators launched, host-device syncs,
host-to-device copies of Python data, bytes kept for backward, host time.

A CPU cannot time what a GPU waits for, but it can count it: every operator is a kernel launch
on a GPU, every `.item()` / boolean index / `nonzero` a sync, every `torch.tensor(list)` a copy
from host memory (`tests/sync_probe.py` explains the counting). Each row runs one piece of the
pre-training step at its real shapes (DINO ViT-S/16 crops and K, EsViT Swin-T token grids) with
a small batch. Run it on two commits to compare them: pieces missing from an older commit fall
back to what that commit did.

    python benchmarks/step_proxies.py                 # the table (about a minute on 2 cores)
    python benchmarks/step_proxies.py --batch 4       # smaller and faster
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from sync_probe import record  # noqa: E402


def host_ms(fn: Callable[[], Any], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return 1000 * statistics.median(times)


def saved_for_backward_mb(fn: Callable[[], Any]) -> float:
    """Bytes autograd keeps between forward and backward, in MB."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values()) / 2**20


def photo_batch(batch: int, mixed: bool = False) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    shapes = [(500, 375) if mixed and i % 2 else (375, 500) for i in range(batch)]
    return [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for h, w in shapes]


def row(name: str, log: Any, ms: float | None = None, **extra: Any) -> dict[str, Any]:
    return {"piece": name, "operators": log.launches, "syncs": log.syncs, "host_copies": log.host_data_copies,
            "host_ms": ms, **extra}


def multicrop_rows(batch: int) -> list[dict[str, Any]]:
    from vitssl.augment.gpu_multicrop import GPUMultiCrop
    from vitssl.augment.mae_transform import MAECropConfig, MAEDeviceCrop
    from vitssl.augment.multicrop import MultiCropConfig

    rows = []
    aug = GPUMultiCrop(MultiCropConfig(local_crops_number=10))
    for mixed in (False, True):
        images = photo_batch(batch, mixed)
        aug(images, torch.Generator().manual_seed(0))
        _, log = record(aug, images, torch.Generator().manual_seed(1))
        ms = host_ms(lambda: aug(images, torch.Generator().manual_seed(1)))
        label = "mixed orientations" if mixed else "landscape"
        rows.append(row(f"GPUMultiCrop 2x224+10x96, {batch} {label} 500x375", log, ms,
                        roi_align_calls=log.calls.get("torchvision.roi_align", 0)))
    mae = MAEDeviceCrop(MAECropConfig())
    images = photo_batch(batch)
    mae(images, torch.Generator().manual_seed(0))
    _, log = record(mae, images, torch.Generator().manual_seed(1))
    rows.append(row(f"MAEDeviceCrop 224, {batch} images", log))
    return rows


def loss_rows(batch: int) -> list[dict[str, Any]]:
    import torch.nn.functional as F

    from vitssl.losses.dino import multicrop_cross_entropy
    from vitssl.losses.esvit import RegionLoss

    k = 65536
    teacher = F.softmax(torch.randn(2, batch, k), -1)
    student = F.log_softmax(torch.randn(12, batch, k), -1)
    _, log = record(multicrop_cross_entropy, teacher, student)
    rows = [row(f"DINO loss, 12 views x {batch} x K=65536", log)]

    def region() -> torch.Tensor:
        torch.manual_seed(0)
        logits = [torch.randn(2, batch, 49, k, requires_grad=True), torch.randn(10, batch, 9, k, requires_grad=True)]
        tokens = [torch.randn(2, batch, 49, 768), torch.randn(10, batch, 9, 768)]
        return RegionLoss(k)(logits, tokens, torch.randn(2, batch, 49, k), tokens[0], 0.07)

    _, log = record(region)
    rows.append(row(f"EsViT region loss, Swin-T grids (49 / 9 tokens), {batch} images, K=65536", log,
                    host_ms(region, 1), saved_for_backward_mb=round(saved_for_backward_mb(region))))
    return rows


def network_rows() -> list[dict[str, Any]]:
    from vitssl.backbones import BackboneConfig
    from vitssl.engine.optim import clip_gradients
    from vitssl.methods import build_method, method_configs

    cfg = method_configs()["dino"]()
    method = build_method(cfg, BackboneConfig(name="vit_small", patch_size=16))
    params = [p for p in method.student.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p)
    _, log = record(clip_gradients, params, 3.0, "per_tensor")
    rows = [row(f"per-tensor clipping, DINO ViT-S/16 student ({len(params)} tensors)", log)]
    # host time per step spent pairing teacher and student parameters by name for the EMA
    pairing = lambda: (dict(method.teacher.named_parameters()), dict(method.student.named_parameters()))
    per_step = 0.0 if hasattr(method, "ema") else host_ms(pairing, 50)  # TeacherEMA pairs once
    rows.append({"piece": "EMA: pairing teacher/student parameters, per step (ViT-S/16)", "host_ms": per_step})

    views = list(torch.randn(2, 16, 3, 224, 224).unbind(0)) + list(torch.randn(10, 16, 3, 96, 96).unbind(0))
    try:
        from vitssl.methods.views import resolution_batches
    except ImportError:
        from vitssl.methods.views import resolution_groups

        resolution_batches = lambda v: [torch.cat(g) for g in resolution_groups(v)]
    base = {v.untyped_storage().data_ptr() for v in views}
    copied = sum(b.nbytes for b in resolution_batches(views[:2]) + resolution_batches(views)
                 if b.untyped_storage().data_ptr() not in base)
    rows.append({"piece": "views joined for teacher + student per step, 16 images", "copied_mb": round(copied / 2**20)})
    return rows


def selfpatch_rows() -> list[dict[str, Any]]:
    from vitssl.losses.selfpatch import neighbour_indices

    def step() -> None:
        for grid in ((14, 14), (6, 6)):
            index, valid = neighbour_indices(grid, "inside")
            index.to("cpu"), valid.to("cpu")

    step()
    _, log = record(step)
    return [row("SelfPatch neighbour tables of one step (14x14 and 6x6)", log)]


def handover_rows(batch: int) -> list[dict[str, Any]]:
    """Main-process CPU time to receive one batch of encoded JPEGs from a loader worker."""
    from torch.utils.data import DataLoader

    from vitssl.augment.device_input import collate_decoded
    from vitssl.data.device_decode import EncodedJPEG

    payload = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (500, 375), (120, 60, 30)).save(payload, format="JPEG", quality=90)
    data = payload.getvalue()

    class Jpegs(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return batch * 20

        def __getitem__(self, i: int) -> tuple[EncodedJPEG, int]:
            return EncodedJPEG(torch.frombuffer(bytearray(data), dtype=torch.uint8), f"{i}.jpg"), 0

    loader = DataLoader(Jpegs(), batch_size=batch, num_workers=1, collate_fn=collate_decoded, prefetch_factor=4)
    it = iter(loader)
    next(it)
    time.sleep(1.0)  # let the worker fill its queue, so only the receiving side is timed
    start = time.process_time()
    for _ in range(4):
        next(it)
    ms = 1000 * (time.process_time() - start) / 4
    return [{"piece": f"main-process time to receive {batch} encoded JPEGs from a worker", "host_ms": ms}]


def trainer_rows() -> list[dict[str, Any]]:
    """Host-device syncs of whole trainer steps (tiny DINO with a BatchNorm head on CPU, log_every=5):
    the finite-step check, the optimizer and everything else the step reads."""
    import tempfile

    from helpers import tiny_overrides
    from vitssl.config import load_config, to_container, to_objects
    from vitssl.data import build_dataset
    from vitssl.data.pipeline import InputPipeline
    from vitssl.engine.rng import seed_everything
    from vitssl.engine.trainer import Trainer
    from vitssl.methods import build_method, method_configs

    cfg = load_config(None, [*tiny_overrides("digits"), "method.head.use_bn=true", "train.log_every=5",
                             "train.max_steps_per_epoch=5", "train.checkpoint_every_minutes=0"], method_configs())
    objs = to_objects(cfg)
    seed_everything(0)
    method = build_method(objs.method, objs.backbone)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(method, InputPipeline(method, build_dataset("digits", "train"), objs.train), objs.train,
                          objs.optim, run_dir, to_container(cfg))
        batches = trainer._batches(0, 0)
        syncs = [record(trainer._optimizer_step, [next(batches)])[1].syncs for _ in range(5)]
    return [{"piece": "trainer step, tiny DINO + BatchNorm head, log_every=5: syncs per non-log / log step",
             "syncs": f"{max(syncs[:4])} / {syncs[4]}"}]


def format_table(rows: list[dict[str, Any]]) -> str:
    columns = ["piece", "operators", "syncs", "host_copies", "roi_align_calls", "saved_for_backward_mb",
               "copied_mb", "host_ms"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = [r.get(c) for c in columns]
        lines.append("| " + " | ".join("" if c is None else f"{c:.2f}" if isinstance(c, float) else str(c)
                                       for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16, help="images per batch (default 16)")
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error("--batch must be at least 1")
    torch.set_num_threads(1)
    rows = (multicrop_rows(args.batch) + loss_rows(max(1, args.batch // 4)) + network_rows() + selfpatch_rows()
            + handover_rows(64 if args.batch >= 16 else args.batch) + trainer_rows())
    print(format_table(rows))


if __name__ == "__main__":
    main()
