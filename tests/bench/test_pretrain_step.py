"""The pre-training step benchmark (`vitssl benchmark step`, benchmarks/pretrain_step.py) in its tiny
CPU mode: every method runs, the table and JSON are complete."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from vitssl.bench import pretrain_step
from vitssl.cli import main as cli

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "pretrain_step.py"


@pytest.fixture(scope="module")
def bench():
    return pretrain_step


def check_rows(bench, rows, expected):
    assert [(r["method"].removesuffix(" (tiny)"), r["input"], r["aug"]) for r in rows] == expected
    for r in rows:
        assert set(r) == set(bench.FIELDS)
        assert r["images_per_s"] > 0 and r["step_ms"] > 0 and r["data_ms"] >= 0
        assert r["gflop_per_image"] > 0 and r["mfu"] > 0 and math.isfinite(r["mfu"])
        assert r["peak_gib"] is None and r["device"] == "cpu" and r["precision"] == "fp32" and r["batch"] == 4


def test_tiny_cpu_run_of_every_method_writes_table_and_json(bench, tmp_path, capsys):
    out = tmp_path / "bench.json"
    result = bench.main(["--device", "cpu", "--steps", "2", "--tiny", "--json", str(out)])
    labels = [s.label for s in bench.SETUPS.values()]
    check_rows(bench, result["rows"], [(label, source, aug) for label in labels
                                       for source, aug in (("synthetic", "-"), ("jpeg", "gpu"))])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["matmul_tflops"] > 0 and result["tiny"] and result["steps"] == 2
    table = capsys.readouterr().out
    assert table.startswith("| method | input | aug | batch | images_per_s | step_ms | data_ms | peak_gib |")
    assert table.count("(tiny) |") == 2 * len(bench.SETUPS)  # every registered method's setups, two inputs


def test_cpu_loader_path(bench):
    result = bench.main(["--device", "cpu", "--steps", "2", "--tiny", "--methods", "dino", "--input", "jpeg",
                         "--aug", "cpu", "--workers", "0"])
    check_rows(bench, result["rows"], [("DINO ViT-S/16", "jpeg", "cpu")])


def test_bad_method_name_fails_with_the_choices(bench):
    with pytest.raises(SystemExit):
        bench.main(["--methods", "dino,moco", "--tiny"])


def test_the_cli_and_the_script_run_the_same_benchmark(tmp_path, capsys):
    assert cli(["benchmark", "step", "--device", "cpu", "--steps", "1", "--tiny", "--methods", "mae-lite",
                "--input", "synthetic", "--json", str(tmp_path / "cli.json")]) == 0
    rows = json.loads((tmp_path / "cli.json").read_text())["rows"]
    assert [(r["method"], r["input"]) for r in rows] == [("MAE-Lite ViT-Tiny (tiny)", "synthetic")]
    assert cli(["benchmark", "step", "--methods", "moco"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"vitssl: error: unknown method(s) ['moco']: choose from {list(pretrain_step.SETUPS)}")
    assert list(pretrain_step.SETUPS)[:4] == ["dino", "esvit", "selfpatch", "mae-lite"]
    done = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--methods" in done.stdout and "--tiny" in done.stdout


def test_the_gpu_session_script_is_valid_bash_and_its_steps_parse():
    import shlex

    from vitssl.cli import build_parser

    script = SCRIPT.parent / "gpu_session.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    steps = [shlex.split(line)[3:] for line in script.read_text().splitlines() if line.startswith("step ")]
    assert len(steps) == 3
    for argv in steps:
        argv = [a.replace('"${WORKERS:-15}"', "15").replace("${WORKERS:-15}", "15") for a in argv]
        args = build_parser().parse_args(["benchmark", "step", *argv])
        assert pretrain_step.check_arguments(args).methods
