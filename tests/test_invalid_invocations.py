"""Invalid invocations of the `vitssl` command line, table-driven: each must end in one error line.

Every case runs `vitssl.cli.main(argv)` in-process inside one scratch folder that holds a tiny
trained run, a folder of the user's own files and some broken YAML files, and checks what a user
would: exit code 2; the last non-empty line of stderr starts with `vitssl` and holds `error:`
(and, where given, names the key or option); no traceback anywhere; every file that was in the
scratch folder before is byte-identical afterwards, and nothing new was written.

Add a case by appending a `Case` to `CASES` (or a list of them, then `CASES += ...`); argv may
use `{run}` (the tiny run folder), `{run_2proc}` (the same, written by 2 processes), `{mine}`
(the user's folder) and `{scratch}`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from helpers import tiny_overrides
from invocation import invoke, snapshot
from vitssl.cli import main
from vitssl.engine.checkpoint import save_checkpoint
from vitssl.engine.trainer import Trainer
from vitssl.eval import finetune


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    expect: str = ""  # a fragment the error line must contain (the key or option at fault)
    needs: frozenset[str] = frozenset()  # fixtures the argv's folders come from (see NEEDS)
    writes: bool = False  # the command may create new files (never change existing ones)

    @property
    def id(self) -> str:
        return " ".join(self.argv)[:90]


NEEDS = {"{run}": "tiny_run", "{run_2proc}": "two_process_run"}  # placeholder -> fixture that makes it


def case(*argv: str, expect: str = "", needs: tuple[str, ...] = (), writes: bool = False) -> Case:
    needs = (*needs, *(fixture for mark, fixture in NEEDS.items() if any(mark in a for a in argv)))
    return Case(tuple(argv), expect, frozenset(needs), writes)


FRESH = ("pretrain", "--data", "digits", "--out", "{scratch}/fresh")  # a run folder that must stay unmade


def pre(*overrides: str, expect: str = "", method: str | None = None, backbone: str | None = None) -> Case:
    """`vitssl pretrain` of a fresh run with one bad override (plus method/backbone flags)."""
    flags = (*(("--method", method) if method else ()), *(("--backbone", backbone) if backbone else ()))
    key = overrides[0].split("=")[0] if overrides else ""
    return case(*FRESH, *flags, *overrides, expect=expect or key)


TRAIN = [
    pre("train.batch_size=0"), pre("train.batch_size=-4"), pre("train.batch_size=1.5"), pre("train.batch_size=abc"),
    pre("train.accum_steps=0"), pre("train.log_every=0"), pre("train.epochs=0"), pre("train.epochs=-1"),
    pre("train.num_workers=-1"), pre("train.max_steps_per_epoch=-1"), pre("train.checkpoint_every_steps=-1"),
    pre("train.checkpoint_every_minutes=-5"), pre("train.checkpoint_every_minutes=nan"),
    pre("train.save_every_epochs=-1"), pre("train.keep_checkpoints=-1"), pre("train.max_nonfinite_steps=-1"),
    pre("train.collapse_min_entropy=nan"), pre("train.collapse_max_kl=-1"), pre("train.collapse_patience=0"),
    pre("train.precision=fp8"), pre("train.device=gpu"), pre("train.augment_on=gpu"), pre("train.decode_on=gpu"),
    pre("train.decode_on=device"), pre("train.strategy=zero3"), pre("train.knn_every_epochs=-1"),
    pre("train.knn_every_epochs=1", expect="train.knn_data"), pre("train.knn_k=0"), pre("train.tensorboard=maybe"),
    pre("train.seed=1.5"), pre("train.bach_size=8", expect="did you mean 'train.batch_size'"),
]
OPTIM = [
    pre("optim.lr=nan"), pre("optim.lr=inf"), pre("optim.lr=-1e-3"), pre("optim.lr=fast"), pre("optim.lr=null"),
    pre("optim.min_lr=-1"), pre("optim.weight_decay=nan"), pre("optim.weight_decay=-0.1"),
    pre("optim.weight_decay_end=inf"), pre("optim.warmup_epochs=-1"), pre("optim.betas=[0.9]"),
    pre("optim.betas=[0.9,1.5]"), pre("optim.momentum=1.5"), pre("optim.clip_grad=-1"), pre("optim.clip_mode=layer"),
    pre("optim.optimizer=lamb"), pre("optim.lrr=1", expect="did you mean 'optim.lr'"),
]
BACKBONE = [
    pre("backbone.patch_size=0"), pre("backbone.patch_size=-16"), pre("backbone.img_size=0"),
    pre("backbone.img_size=100"), pre("backbone.num_heads=5"), pre("backbone.embed_dim=100", expect="num_heads"),
    pre("backbone.depth=0"), pre("backbone.drop_path_rate=1.0"), pre("backbone.drop_path_rate=nan"),
    pre("backbone.pos_embed=rope"), pre("backbone.window_size=7"), pre(backbone="vit_gigantic", expect="vit_gigantic"),
    pre("backbone.pos_embed=sincos", backbone="swin_tiny"), pre("backbone.num_heads=0"),
    pre("backbone.patch_size=14", expect="method.crops.local_crops_size"), pre("method.crops.global_crops_size=200"),
    pre("method.crops.local_crops_size=100", expect="method.crops.local_crops_size"),
]
DATA = [pre("data.max_image_pixels=-1"), pre("data.max_image_pixels=lots"), pre("data.paths=x", expect="data.path")]
DINO = [
    pre("method.teacher_temp=0"), pre("method.student_temp=-0.1"), pre("method.warmup_teacher_temp=nan"),
    pre("method.momentum_teacher=1.5"), pre("method.center_momentum=-0.1"), pre("method.freeze_last_layer=-1"),
    pre("method.warmup_teacher_temp_epochs=-1"), pre("method.head.out_dim=0"), pre("method.head.nlayers=0"),
    pre("method.head.hidden_dim=-1"), pre("method.head.bottleneck_dim=0"), pre("method.crops.local_crops_number=-1"),
    pre("method.crops.local_crops_number=2.5"), pre("method.crops.brightness=nan"), pre("method.crops.flip_prob=2"),
    pre("method.crops.global_crops_scale=[0.5,0.2]"), pre("method.crops.std=[0,1,1]"),
    pre("method.crops.blur_radius=[0.1,inf]"), pre("method.name=dinoo", expect="did you mean 'dino'"),
    pre("method.teacher_tmp=0.1", expect="method.teacher_tmp"),
    pre("method.mim_weight=-1"), pre("method.mim.ratio=1"), pre("method.mim.ratio_var=0.9"),
    pre("method.mim.prob=nan"), pre("method.mim.teacher_temp=0"), pre("method.mim.shared_head=maybe"),
    pre("method.mim_weight=1", backbone="swin_tiny"), pre("method.pixel_weight=-1"),
    pre("method.pixel_weight=1", backbone="swin_tiny"),
]
OTHER_METHODS = [
    pre("method.region_weight=-1", method="esvit"), pre("method.view_weight=nan", method="esvit"),
    pre("method.region_head.out_dim=0", method="esvit"), pre("method.region_start_epoch=-1", method="esvit"),
    pre("method.num_neighbours=9", method="selfpatch"), pre("method.patch_loss_weight=nan", method="selfpatch"),
    pre("method.aggregator_depth=-1", method="selfpatch"), pre("method.neighbour_border=outside", method="selfpatch"),
    pre("method.patch_head.nlayers=0", method="selfpatch"),
    pre("method.mask_ratio=1", method="mae"), pre("method.mask_ratio=nan", method="mae"),
    pre("method.decoder.num_heads=5", method="mae"), pre("method.decoder.embed_dim=24", method="mae",
                                                          expect="method.decoder"),
    pre("method.decoder.mlp_ratio=0", method="mae"), pre("method.crop.size=0", method="mae"),
    pre("method.crop.size=100", method="mae"), pre("method.crop.interpolation=nearest", method="mae"),
    pre("method.crop.std=[0,0,0]", method="mae"), pre("method.crop.scale=[nan,1]", method="mae"),
    *[pre(method="mae", backbone=b, expect="needs a ViT") for b in ("swin_tiny", "cvt_tiny", "vil_tiny", "resnet50")],
    pre(method="mae-distill", backbone="resnet50", expect="needs a ViT"),
    pre("backbone.stem=conv", method="mae", expect="backbone.stem=patch"),  # the stem would see masked pixels
    pre("backbone.stem=conv", method="mae-distill", expect="backbone.stem=patch"),
    pre("method.attn_alpha=nan", method="mae-distill"), pre("method.hidden_alpha=-1", method="mae-distill"),
    pre("method.distill_attn_layers=[1.5]", method="mae-distill", expect="distill_attn_layers"),
    case("pretrain", "--data", "digits", "--out", "{scratch}/fresh", "--method", "byol", expect="unknown method"),
]
CONFIG_FILES = [
    case(*FRESH, "--config", "{scratch}/folder.yaml", expect="is a folder"),
    case(*FRESH, "--config", "{mine}", expect="is a folder"),
    case(*FRESH, "--config", "{scratch}/missing.yaml", expect="does not exist"),
    case(*FRESH, "--config", "{scratch}/sub/missing", expect="does not exist"),
    case(*FRESH, "--config", "{scratch}/bad.yaml", expect="not valid YAML"),
    case(*FRESH, "--config", "{scratch}/tabs.yaml", expect="not valid YAML"),
    case(*FRESH, "--config", "{scratch}/duplicate.yaml", expect="not valid YAML"),
    case(*FRESH, "--config", "{scratch}/list.yaml", expect="not a mapping"),
    case(*FRESH, "--config", "{scratch}/scalar.yaml", expect="not a mapping"),
    case(*FRESH, "--config", "{scratch}/binary.yaml", expect="not a UTF-8 text file"),
    case(*FRESH, "--config", "{scratch}/loop.yaml", expect="inherits from itself"),
    case(*FRESH, "--config", "{scratch}/badvalue.yaml", expect="optim.lr"),
    case(*FRESH, "--config", "dino_vit_smal16", expect="did you mean 'dino_vit_small16'"),
    case(*FRESH, "optim.lr", expect="no '='"),
    case("config", "--config", "{scratch}/bad.yaml", expect="bad.yaml"),
    case("config", "train.batch_size=0", expect="train.batch_size"),
    case("config", "--config", "demo_mnist", "backbone.num_heads=5", expect="backbone.num_heads"),
]
RESUME = [
    case("pretrain", "--resume", "{run}", "train.batch_size=4", expect="train.batch_size"),
    case("pretrain", "--resume", "{run}", "train.accum_steps=2", expect="train.accum_steps"),
    case("pretrain", "--resume", "{run}", "train.epochs=0", expect="train.epochs"),
    case("pretrain", "--resume", "{run}", "optim.lr=nan", expect="optim.lr"),
    case("pretrain", "--resume", "{run}", "--config", "demo_mnist", expect="--config"),
    case("pretrain", "--resume", "{run}", "--image-size", "32", expect="--image-size"),
    case("pretrain", "--resume", "{run}", "data.image_size=8", expect="data.image_size=8"),
    case("pretrain", "--resume", "{run}", "backbone.img_size=32", expect="backbone.img_size"),
    case("pretrain", "--resume", "{run}", "method.crops.local_crops_size=12", expect="local_crops_size"),
    case("pretrain", "--resume", "{scratch}/nothing", expect="config.yaml"),
    case("pretrain", "--resume", "{run_2proc}", expect="2 processes"),
]
EVAL = [
    *[case("eval", proto, "--checkpoint", "{run}", "--train", "digits", "--val", "digits", *bad, expect=bad[0])
      for proto in ("knn", "linear")
      for bad in (("--image-size", "0"), ("--batch-size", "0"), ("--num-workers", "-1"), ("--resize-size", "-5"),
                  ("--batch-size", "many"))],
    case("eval", "knn", "--checkpoint", "{run}", "--train", "digits", "--val", "digits", "--ks", "0", expect="--ks"),
    case("eval", "knn", "--checkpoint", "{run}", "--train", "digits", "--val", "digits", "--ks", "10", "100000",
         expect="memory bank"),
    case("eval", "knn", "--checkpoint", "{run}", "--train", "digits", "--val", "digits", "--temperature", "0",
         expect="--temperature"),
    case("eval", "knn", "--checkpoint", "{run}", "--train", "digits", "--val", "digits", "--temperature", "nan",
         expect="--temperature"),
    *[case("eval", "linear", "--checkpoint", "{run}", "--train", "digits", "--val", "digits", *bad, expect=bad[0])
      for bad in (("--epochs", "0"), ("--lr", "-1"), ("--lrs", "0.1", "nan"), ("--n-last-blocks", "0"))],
    *[case("eval", "finetune", "--checkpoint", "{run}", "--train", "digits", "--val", "digits", *bad, expect=bad[0])
      for bad in (("--train-fraction", "0"), ("--train-fraction", "1.5"), ("--samples-per-class", "0"),
                  ("--epochs", "0"), ("--lr", "inf"), ("--seed", "-1"))],
    *[case("eval", "finetune", "--checkpoint", "{run}", "--train", "digits", "--val", "digits", bad,
           expect=bad.split("=")[0])
      for bad in ("layer_decay=2", "mixup=-1", "drop_path=1", "crop_scale=[0.5,0.1]", "optimizer=lamb",
                  "batch_size=0", "hflip=nan")],
    *[case("eval", "segmentation", "--checkpoint", "{run}", "--train", "shapes", "--val", "shapes", *bad,
           expect=bad[0])
      for bad in (("--epochs", "0"), ("--batch-size", "-1"), ("--lr", "nan"), ("--image-size", "0"))],
    *[case("eval", "video-segmentation", "--checkpoint", "{run}", "--frames", "{scratch}/frames", "--first-mask",
           "{scratch}/mask.png", *bad, expect=bad[0])
      for bad in (("--topk", "0"), ("--n-last-frames", "0"), ("--short-side", "0"), ("--neighborhood", "-1"))],
]
ANALYZE = [
    *[case("analyze", "correspondence", "--checkpoint", "{run}", "--images", "digits", *bad, expect=bad[0])
      for bad in (("--top", "0"), ("--limit", "0"), ("--image-size", "0"))],
    *[case("analyze", "attention", "--checkpoint", "{run}", "--images", "digits", *bad, expect=bad[0])
      for bad in (("--limit", "-1"), ("--image-size", "abc"))],
    *[case("analyze", "layers", "--a", "{run}", "--b", "{run}", "--data", "digits", *bad, expect=bad[0])
      for bad in (("--limit", "0"), ("--batch-size", "0"))],
    *[case("analyze", "attention-stats", "--checkpoint", "{run}", "--data", "digits", *bad, expect=bad[0])
      for bad in (("--limit", "0"), ("--batch-size", "0"), ("--distance-unit", "mile"))],
]
BENCHMARK = [
    *[case("benchmark", "throughput", "--backbone", "vit_tiny", *bad, expect=bad[0])
      for bad in (("--batch-size", "0"), ("--iters", "0"), ("--image-size", "0"), ("--precision", "fp8"))],
    *[case("benchmark", "step", "--tiny", *bad, expect=bad[0])
      for bad in (("--steps", "0"), ("--batch-size", "0"), ("--workers", "-1"), ("--warmup", "-1"),
                  ("--images", "0"), ("--jpeg-size", "0", "10"))],
]
OTHERS = [
    case("export", "--checkpoint", "{run}", "--out", "{scratch}/exported", "--format", "onnx", expect="--format"),
    case("export", "--out", "{scratch}/exported", expect="--checkpoint"),
    case("report", "{run}", "--limit", "0", expect="--limit"),
    case("report", "{run}", "--image-size", "-3", expect="--image-size"),
    case("demo", "--epochs", "0", expect="--epochs"),
    case("demo", "--epochs", "-2", expect="--epochs"),
    case("demo", "--seed", "-1", expect="--seed"),
    case("demo", "--dataset", "cifar", expect="--dataset"),
    case("demo", "--method", "byol", expect="--method"),
    case("import", "--from", "moco", "--checkpoint", "{scratch}/x.pth", "--out", "{scratch}/imported", expect="--from"),
    case("frobnicate", expect="frobnicate"),
    case("eval", "knn", "--checkpoint", "{run}", expect="required"),
]

CASES: list[Case] = [*TRAIN, *OPTIM, *BACKBONE, *DATA, *DINO, *OTHER_METHODS, *CONFIG_FILES, *RESUME, *EVAL,
                     *ANALYZE, *BENCHMARK, *OTHERS]


def _user_files(root: Path) -> None:
    """A folder of the user's own files, and config files broken in every way a user can break one."""
    mine = root / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("learning_rate: 3\n")
    (mine / "metrics.jsonl").write_text('{"note": "mine"}\n')
    (mine / "loss_curve.png").write_bytes(b"\x89PNG\r\n\x1a\n my own picture")
    (root / "folder.yaml").mkdir()
    (root / "bad.yaml").write_text("optim:\n  lr: [0.1, 0.2\n")
    (root / "tabs.yaml").write_text("optim:\n\tlr: 0.1\n")
    (root / "duplicate.yaml").write_text("optim:\n  lr: 0.1\n  lr: 0.2\n")
    (root / "list.yaml").write_text("- optim.lr=0.1\n- train.epochs=2\n")
    (root / "scalar.yaml").write_text("5\n")
    (root / "binary.yaml").write_bytes(b"\xff\xfe\x00optim")
    (root / "loop.yaml").write_text(f"inherit: {root / 'loop.yaml'}\n")
    (root / "badvalue.yaml").write_text("inherit: demo_mnist\noptim:\n  lr: .nan\n")
    (root / "x.pth").write_bytes(b"not a checkpoint")


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("invalid")
    _user_files(root)
    return root


@pytest.fixture(scope="module")
def tiny_run(scratch) -> Path:
    run = scratch / "run"
    assert main(["pretrain", "--data", "digits", "--out", str(run), *tiny_overrides("digits")[1:]]) == 0
    return run


@pytest.fixture(scope="module")
def two_process_run(tiny_run) -> Path:
    """The tiny run as if written by two processes (a global batch this single process cannot resume)."""
    run = tiny_run.parent / "run_2proc"
    shutil.copytree(tiny_run, run)
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    payload["world_size"] = 2
    for path in run.glob("checkpoint*.pt"):
        path.unlink()
    save_checkpoint(payload, run / "checkpoint.pt")
    return run


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_invalid_invocation_ends_in_one_line(c: Case, scratch, request, capsys, monkeypatch):
    for fixture in sorted(c.needs):
        request.getfixturevalue(fixture)
    monkeypatch.chdir(scratch)  # relative outputs (demo's ./demo_run) land where they are watched
    monkeypatch.delenv("VITSSL_DEBUG", raising=False)
    # a case that is not refused must fail here, not train for minutes (its error is due before training)
    accepted = lambda *a, **k: pytest.fail("the invocation was accepted and reached training")  # noqa: E731
    monkeypatch.setattr(Trainer, "fit", accepted)
    monkeypatch.setattr(finetune, "finetune_backbone", accepted)
    folders = dict(run=scratch / "run", run_2proc=scratch / "run_2proc", mine=scratch / "mine", scratch=scratch)
    argv = [a.format(**folders) for a in c.argv]
    before = snapshot(scratch)
    capsys.readouterr()
    code = invoke(argv)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"exit {code}; stderr: {err}"
    assert lines, "no error line on stderr"
    last = lines[-1]
    assert last.startswith("vitssl") and "error:" in last, last
    assert c.expect in last, f"{c.expect!r} not named in: {last}"
    assert "Traceback" not in out + err
    after = snapshot(scratch)
    changed = [name for name, digest in before.items() if after.get(name) != digest]
    assert not changed, f"changed or removed: {changed}"
    if not c.writes:
        assert set(after) == set(before), f"new files: {sorted(set(after) - set(before))}"


def test_a_separate_process_prints_exactly_one_line(tmp_path):
    """The real entry point, with its own interpreter and stderr: nothing but the error line."""
    argv = [sys.executable, "-m", "vitssl", "pretrain", "--data", "digits", "--out", str(tmp_path / "r"),
            "optim.lr=nan"]
    env = dict(os.environ, PYTHONWARNINGS="ignore")  # third-party import-time warnings are not ours
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "vitssl: error: optim.lr=nan is not finite: use a finite number >= 0\n"
    assert list(tmp_path.iterdir()) == []


def test_the_table_is_large_and_distinct():
    assert len(CASES) >= 80
    assert len({c.argv for c in CASES}) == len(CASES)
