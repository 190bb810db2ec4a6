"""Tiny configs and builders shared by tests (importable: tests/ is on pythonpath)."""

from __future__ import annotations

import atexit
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from functools import lru_cache
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vitssl.config import DEFAULT_METHOD, load_config, to_container, to_objects
from vitssl.engine.checkpoint import CHECKPOINT_FORMAT, save_checkpoint
from vitssl.methods import build_method, method_class, method_configs

TINY_BACKBONE = dict(name="vit_tiny", patch_size=4, img_size=16, embed_dim=32, depth=2, num_heads=2,
                     drop_path_rate=0.0)
# Backbones without patches or attention shrink through their own keys (stage width, blocks per stage).
TINY_BACKBONE_BY_NAME = {"resnet50": dict(img_size=16, embed_dim=8, depth=1, drop_path_rate=0.0),
                         "vil_tiny": dict(img_size=32, embed_dim=8, depth=1, num_heads=1, drop_path_rate=0.0)}
# Backbones whose input sides must be multiples of 32 (ViL) take 32-px crops instead of 16/8.
TINY_CROPS_BY_NAME = {"vil_tiny": ["method.crops.global_crops_size=32", "method.crops.local_crops_size=32"]}


def tiny_untrained_run(method: str, embed_dim: int = 48, num_heads: int = 3) -> Path:
    """An untrained tiny run's checkpoint.pt (patch 4, 16 px, depth 2; by default wider and with
    more heads than TINY_BACKBONE), written once per session: what a method's `run_fields` (e.g.
    D-MAE-Lite's teacher) name in tests."""
    return _tiny_untrained_run(method, embed_dim, num_heads)


@lru_cache(maxsize=None)
def _tiny_untrained_run(method: str, embed_dim: int, num_heads: int) -> Path:
    overrides = [*tiny_overrides(method=method), f"method.name={method}", f"backbone.embed_dim={embed_dim}",
                 f"backbone.num_heads={num_heads}"]
    cfg = load_config(None, overrides, method_configs())
    with torch.random.fork_rng():
        torch.manual_seed(1)
        objs = to_objects(cfg)
        method_module = build_method(objs.method, objs.backbone)
    folder = Path(tempfile.mkdtemp(prefix="vitssl-run-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    payload = {"format": CHECKPOINT_FORMAT, "config": to_container(cfg), "method": method_module.state_dict()}
    return save_checkpoint(payload, folder / "checkpoint.pt")


def tiny_mae_teacher(embed_dim: int = 48, num_heads: int = 3) -> Path:
    """An untrained tiny MAE run, for mae-distill's teacher."""
    return tiny_untrained_run("mae", embed_dim, num_heads)


def preset_method(preset: str) -> str:
    """The method a packaged preset (or YAML path) selects."""
    return str(load_config(preset, [], method_configs()).method.name)


def tiny_overrides(data: str = "mnist", method: str | None = None, preset: str | None = None) -> list[str]:
    """Overrides that shrink any preset to seconds on CPU (2 steps of 8 images).

    The method's own keys are its `tiny_overrides()`: name the method, or the preset that selects
    it (default: the default method's). Config fields that name another run (`run_fields`, e.g.
    D-MAE-Lite's teacher) get a tiny untrained run of the method they need.
    """
    if method is None:
        method = preset_method(preset) if preset else DEFAULT_METHOD
    cls = method_class(method)
    name = str(load_config(preset, [], method_configs()).backbone.name) if preset else ""
    backbone = TINY_BACKBONE_BY_NAME.get(name, TINY_BACKBONE)
    multicrop = "crops" in {f.name for f in dataclasses.fields(cls.Config)}
    return [
        f"data.path={data}",
        *[f"backbone.{k}={v}" for k, v in backbone.items() if k != "name"],
        *cls.tiny_overrides(),
        *(TINY_CROPS_BY_NAME.get(name, []) if multicrop else []),
        *[f"method.{key}={tiny_untrained_run(needed)}" for key, needed in cls.run_fields.items()],
        "train.batch_size=8", "train.epochs=1", "train.max_steps_per_epoch=2", "train.num_workers=0",
        "train.progress=false", "train.tensorboard=false", "train.log_every=1", "train.device=cpu",
        "train.precision=fp32", "optim.warmup_epochs=0",
    ]


def tiny_method(name: str):
    cfg = to_objects(load_config(None, [f"method.name={name}", *tiny_overrides(method=name)], method_configs()))
    return build_method(cfg.method, cfg.backbone)


def one_batch(method, n: int = 4):
    g = torch.Generator().manual_seed(0)
    images = [Image.fromarray((torch.rand(20, 20, 3, generator=g) * 255).byte().numpy()) for _ in range(n)]
    transform = method.train_transform()
    return method.collate([(transform(im, g), 0) for im in images])


def count_sdpa(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A counter of fused-attention (SDPA) calls: `calls[0]` grows by one per call."""
    calls = [0]
    original = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting)
    return calls


def sigkill_pretrain_after_logged_steps(run_dir: Path, args: list[str], logged: int = 3) -> int:
    """Start `vitssl pretrain --out run_dir *args` as a real process, SIGKILL its process group
    (data-loader workers too, as a scheduler's kill would) once `logged` metric lines exist, and
    return the step of the checkpoint it left. The child gets this process's intra-op thread
    count, so a resumed run in this process adds floats in the same order."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS=str(torch.get_num_threads()))
    proc = subprocess.Popen([sys.executable, "-m", "vitssl", "pretrain", "--out", str(run_dir), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and (
            not metrics.exists() or len(metrics.read_text().splitlines()) < logged):
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["step"]


def assert_runs_trained_the_same(run_a: Path, run_b: Path) -> None:
    """The two runs' final `checkpoint.pt` hold bit-identical method states (same keys, same values)."""
    a, b = (torch.load(run / "checkpoint.pt", weights_only=True, map_location="cpu")["method"] for run in (run_a, run_b))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def load_benchmark(name: str):
    """Import `benchmarks/NAME.py` (not a package) as module NAME, registered in `sys.modules`
    (dataclasses in it look their module up there); the caller removes it when done."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def benchmark_module(name: str):
    """`load_benchmark` for a test module's fixture: yields the module, then unregisters it."""
    yield load_benchmark(name)
    del sys.modules[name]
