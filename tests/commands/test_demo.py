"""End to end: the demo's pre-training must beat the same network at random initialisation."""

import json

import pytest

from vitssl.cli import main


@pytest.mark.slow
def test_short_demo_learns(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "random init" in printed and "DINO pre-trained" in printed and "raw pixels" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"] == "mnist" and results["seconds"] > 0
    knn = results["knn_top1"]
    assert 0.0 <= knn["random_init"] <= 1.0 and 0.0 <= knn["pretrained"] <= 1.0
    # measured (1 thread, seed 0): 0.483 -> 0.740 (the earlier recipe, demo_base: 0.331 -> 0.446)
    assert knn["pretrained"] >= knn["random_init"] + 0.08, knn
    assert 0.8 < knn["raw_pixels"] <= 1.0, knn  # MNIST's pixels alone: about 0.9 (the bar to beat)
    assert (out / "loss_curve.png").stat().st_size > 1000
