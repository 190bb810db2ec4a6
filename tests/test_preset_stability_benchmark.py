"""benchmarks/preset_stability.py: verdicts by hand, and a two-step run of two variants."""

import json
import math

import pytest

from helpers import benchmark_module, tiny_overrides


@pytest.fixture(scope="module")
def bench():
    yield from benchmark_module("preset_stability")


def rows(losses, entropy, kl, info):
    return [{"step": 10 * (i + 1), "loss": loss, "teacher_entropy": entropy, "teacher_kl_uniform": kl,
             "teacher_mutual_info": info} for i, loss in enumerate(losses)]


def test_verdicts_by_hand(bench):
    log_k = math.log(4096)  # 8.318
    knn = [{"knn_top1": 0.3}, {"knn_top1": 0.4}]
    learning = bench.summarise(rows([8.3, 7.5], 6.9, 0.5, 0.9), knn, 4096, 0.05, 0.05, 2)
    assert learning["verdict"] == "learning" and learning["knn_first"] == 0.3 and learning["knn_last"] == 0.4
    assert learning["ln_k"] == pytest.approx(log_k) and learning["loss_first"] == 8.3
    flat = bench.summarise(rows([8.31, 8.30], 8.2, 0.1, 0.07), [], 4096, 0.05, 0.05, 2)
    assert flat["verdict"] == "flat" and flat["knn_last"] is None  # 0.07 nats < 0.1: output ignores the image
    near_ln_k = bench.summarise(rows([8.35, 8.24], 7.97, 0.05, 0.29), [], 4096, 0.05, 0.05, 2)
    assert near_ln_k["verdict"] == "learning"  # loss near ln K, but the teacher depends on the image
    one = bench.summarise(rows([8.0, 3.0, 2.0], 0.01, 8.3, 0.0), [], 4096, 0.05, 0.05, 2)
    assert one["verdict"] == "collapsed (one_prototype)"
    uniform = bench.summarise(rows([8.3, 8.3], 8.31, 0.01, 0.01), [], 4096, 0.05, 0.05, 2)
    assert uniform["verdict"] == "collapsed (uniform)"
    brief = bench.summarise(rows([8.0, 7.0], 0.01, 8.3, 0.0)[:1] + rows([7.0], 6.0, 0.5, 0.9), [], 4096,
                            0.05, 0.05, 2)
    assert brief["verdict"] == "learning"  # one odd log step is not a collapse (patience 2)


def test_two_variants_run_and_write_table_and_json(bench, tmp_path, capsys):
    tiny = [o for o in tiny_overrides("digits") if not o.startswith(("data.path", "method.head.out_dim"))]
    out = tmp_path / "stability.json"
    bench.main(["--data", "digits", "--knn-data", "digits", "--out", str(tmp_path / "runs"), "--epochs", "1",
                "--variants", "preset", "K_65536", "--json", str(out), *tiny])
    printed = capsys.readouterr().out
    assert "| preset | 0 | 2 |" in printed and "| K_65536 | 0 | 2 |" in printed
    results = json.loads(out.read_text())["results"]
    assert [r["variant"] for r in results] == ["preset", "K_65536"]
    assert results[0]["ln_k"] == pytest.approx(math.log(4096)) and results[1]["ln_k"] == pytest.approx(math.log(65536))
    assert all(r["knn_last"] is not None and r["verdict"] for r in results)
    again = bench.main(["--data", "digits", "--knn-data", "digits", "--out", str(tmp_path / "runs"), "--epochs", "1",
                        "--variants", "preset", "--summarise-only", *tiny])
    assert again[0]["loss"] == results[0]["loss"] and again[0]["seconds"] is None  # read back, not retrained
