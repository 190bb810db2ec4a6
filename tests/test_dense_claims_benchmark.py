"""benchmarks/dense_claims.py: the table by hand, the plan's budgets, and a one-step run of everything."""

import json
import re
from pathlib import Path

import pytest

from helpers import benchmark_module
from vitssl.config import load_config
from vitssl.methods import method_configs


@pytest.fixture(scope="module")
def bench():
    yield from benchmark_module("dense_claims")


def write(path: Path, box: float, mask: float | None = None, miou: float | None = None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if mask is not None:
        (path / "det.json").write_text(json.dumps({"bbox": {"AP": box}, "segm": {"AP": mask}}))
    if miou is not None:
        (path / "seg.json").write_text(json.dumps({"miou": miou}))


def test_table_is_mean_and_sample_sd_over_the_finished_seeds(bench, tmp_path):
    write(tmp_path / "selfpatch" / "dino_s0", 0.1, 0.2, 0.5)
    write(tmp_path / "selfpatch" / "dino_s1", 0.3, 0.4, 0.7)
    write(tmp_path / "selfpatch" / "selfpatch_s0", 0.25, 0.5)  # its segmentation has not finished
    rows = bench.table(tmp_path, "selfpatch", [0, 1, 2]).splitlines()
    assert rows[0] == "| pre-training | box AP | mask AP | FPN mIoU (shapes-fg) |"
    # mean 0.2, sample sd sqrt(((0.1-0.2)^2 + (0.3-0.2)^2) / 1) = 0.141
    assert rows[2] == "| dino | 0.200 ± 0.141 (n=2) | 0.300 ± 0.141 (n=2) | 0.600 ± 0.141 (n=2) |"
    assert rows[3] == "| selfpatch | 0.250 (n=1) | 0.500 (n=1) | - |"
    assert rows[4] == "| random | - | - | - |"
    assert "mIoU" not in bench.table(tmp_path, "mae", [0])


def test_both_methods_of_a_part_get_the_same_budget(bench, tmp_path):
    jobs = {j.name: j for j in bench.plan(bench.parse(["--out", str(tmp_path), "--pretrain-epochs", "3"]))}
    assert len(jobs) == 1 + 9 + 9 * 2 + 1 + 9 + 9  # data, 9 runs + 9 x (det, seg), teacher, 9 runs + 9 det
    dino, patch = jobs["dino_s1"].argv, jobs["selfpatch_s1"].argv
    assert dino[dino.index("--config") + 1] == "demo_shapes" and "train.epochs=3" in dino and "train.seed=1" in dino
    assert [a for a in patch if a != "demo_selfpatch_shapes" and a not in bench.AS_DEMO_SHAPES] == [
        a.replace("dino", "selfpatch") for a in dino if a != "demo_shapes"]
    # the two resolved configs differ only by SelfPatch's own keys: same backbone, crops, schedule
    dino_cfg, patch_cfg = (load_config(args[args.index("--config") + 1], [a for a in args if "=" in a],
                                       method_configs()) for args in (dino, patch))
    assert dino_cfg.backbone == patch_cfg.backbone and dino_cfg.method.crops == patch_cfg.method.crops
    assert patch_cfg.method.koleo_weight == 0 and dino_cfg.train == patch_cfg.train and dino_cfg.optim == patch_cfg.optim
    lite, distilled = jobs["mae-lite_s2"].argv, jobs["d-mae-lite_s2"].argv
    assert distilled[:len(lite) - 2] == lite[:-2] and "mae-distill" in distilled  # same recipe and steps
    assert jobs["d-mae-lite_s2"].after == ["teacher"] and "train.epochs=4" in lite
    det = [jobs[f"{m}_s0:det"].argv for m in ("dino", "selfpatch", "random")]
    assert len({tuple(a for a in d if "_s0" not in a) for d in det}) == 1  # one fine-tuning schedule


@pytest.mark.slow
def test_one_step_of_everything_prints_both_tables(bench, tmp_path, capsys):
    code = bench.main(["--out", str(tmp_path), "--seeds", "0", "--tiny", "--jobs", "2"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert re.search(r"\| dino \| \d\.\d{3} \(n=1\) \| \d\.\d{3} \(n=1\) \| - \|", printed)  # no seg when tiny
    assert "| d-mae-lite | " in printed
    assert json.loads((tmp_path / "mae" / "d-mae-lite_s0" / "det.json").read_text())["bbox"]["AP"] >= 0
    assert bench.main(["--out", str(tmp_path), "--seeds", "0", "--tiny"]) == 0  # all done: only the table
    assert "start " not in capsys.readouterr().out
