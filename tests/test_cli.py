"""The commands users type, run in-process on tiny settings."""

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from helpers import tiny_overrides
from vitssl.cli import main
from vitssl.commands.pretrain import pretrain
from vitssl.config import load_config, preset_names
from vitssl.methods import method_configs


def image_folder(root, classes=("a", "b"), per_class=8, size=20):
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            arr = (rng.random((size, size, 3)) * 120 + 120 * c).astype(np.uint8)
            Image.fromarray(arr).save(root / name / f"{i}.png")
    return root


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    assert main(["pretrain", "--method", "dino", "--backbone", "vit_tiny", "--data", "digits", "--out", str(run_dir),
                 *tiny_overrides("digits")[1:]]) == 0
    return run_dir


def test_pretrain_writes_a_complete_run_folder(trained_run):
    for name in ("config.yaml", "checkpoint.pt", "metrics.jsonl", "loss_curve.png"):
        assert (trained_run / name).exists(), name
    saved = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert saved["data"]["path"] == "digits" and saved["method"]["crops"]["local_crops_number"] == 2


def test_eval_knn_and_linear(trained_run, capsys, tmp_path):
    code, out, _ = run(capsys, "eval", "knn", "--checkpoint", trained_run, "--train", "digits", "--val", "digits",
                       "--ks", "1", "20", "--device", "cpu", "--num-workers", "0", "--out", tmp_path / "knn.json")
    assert code == 0 and "top-1" in out
    knn = json.loads((tmp_path / "knn.json").read_text())
    assert 0.3 < knn["results"]["20"]["top1"] <= 1.0  # digits: 10 classes, chance 0.1
    code, out, _ = run(capsys, "eval", "linear", "--checkpoint", trained_run, "--train", "digits", "--val", "digits",
                       "--n-last-blocks", "2", "--epochs", "5", "--device", "cpu", "--num-workers", "0")
    assert code == 0 and "linear probe (pre-trained) top-1" in out and "linear probe (raw pixels)" in out
    linear = json.loads((trained_run / "eval_linear.json").read_text())
    assert linear["n_last_blocks"] == 2 and 0.1 < linear["top1"] <= 1.0


def test_resume_continues_the_run(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["pretrain", "--data", "digits", "--out", run_dir, *tiny_overrides("digits")[1:]]
    assert run(capsys, *args)[0] == 0
    code, _, err = run(capsys, *args)
    assert code == 2 and "already holds a run" in err and "--resume" in err
    assert run(capsys, "pretrain", "--resume", run_dir, "train.epochs=2")[0] == 0
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_image_folder_with_a_corrupt_file_trains_and_warns(tmp_path, capsys):
    data = image_folder(tmp_path / "imgs")
    (data / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (data / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match="skipping unreadable image .*broken.png"):
        code, _, _ = run(capsys, "pretrain", "--data", data, "--out", tmp_path / "run", *tiny_overrides("x")[1:])
    assert code == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data", "/no/such/folder"], "data path '/no/such/folder' does not exist"),
        (["--data", "EMPTY"], "no images found under"),
        (["--data", "digits", "optim.lrr=1"], "unknown config key 'optim.lrr': did you mean 'optim.lr'?"),
        (["--data", "digits", "--backbone", "vit_smal"], "unknown backbone 'vit_smal': did you mean 'vit_small'?"),
        (["--data", "digits", "--config", "nope"], "unknown preset 'nope'"),
        ([], "no training data"),
        (["--data", "digits", "optim.clip_mode=layer"], "optim.clip_mode='layer' is not a choice"),
        (["--data", "digits", "optim.optimizer=lamb"], "optim.optimizer='lamb' is not a choice"),
    ],
)
def test_bad_pretrain_input_gives_one_line_error(tmp_path, capsys, argv, message):
    (tmp_path / "EMPTY").mkdir()
    argv = [str(tmp_path / "EMPTY") if a == "EMPTY" else a for a in argv]
    code, _, err = run(capsys, "pretrain", "--out", tmp_path / "run", *argv, *tiny_overrides("digits")[1:])
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("vitssl: error: ") and message in err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_checkpoint_of_another_architecture_is_refused(trained_run, tmp_path, capsys):
    import torch

    payload = torch.load(trained_run / "checkpoint.pt", weights_only=True)
    payload["config"]["backbone"]["embed_dim"] = 48
    torch.save(payload, tmp_path / "other.pt")
    code, _, err = run(capsys, "eval", "knn", "--checkpoint", tmp_path / "other.pt", "--train", "digits", "--val", "digits")
    assert code == 2 and "another architecture" in err and "shape mismatch" in err
    (tmp_path / "junk.pt").write_bytes(b"junk")
    code, _, err = run(capsys, "eval", "knn", "--checkpoint", tmp_path / "junk.pt", "--train", "digits", "--val", "digits")
    assert code == 2 and "cannot be read" in err


def test_presets_and_config_commands(capsys):
    code, out, _ = run(capsys, "presets")
    assert code == 0 and "dino_vit_small16_boost" in out
    code, out, _ = run(capsys, "config", "--config", "dino_vit_small16_boost", "optim.lr=0.001")
    cfg = yaml.safe_load(out)
    assert code == 0 and cfg["optim"]["lr"] == 0.001 and cfg["method"]["teacher_temp"] == 0.07


@pytest.mark.parametrize("preset", preset_names())
def test_every_preset_runs_two_steps_on_cpu(preset, tmp_path):
    cfg = load_config(preset, tiny_overrides("digits", preset=preset), method_configs())
    trainer = pretrain(cfg, tmp_path / "run")
    assert trainer.step == 2


def test_analyze_correspondence_writes_pictures_and_scores(trained_run, tmp_path, capsys):
    images = image_folder(tmp_path / "imgs", per_class=2, size=24)
    code, out, _ = run(capsys, "analyze", "correspondence", "--checkpoint", trained_run, "--images", images,
                       "--out", tmp_path / "corr", "--top", "4")
    assert code == 0 and "correspondence accuracy" in out
    result = json.loads((tmp_path / "corr" / "correspondence.json").read_text())
    assert result["images"] == 4 and result["pairs"] == 16 and len(list((tmp_path / "corr").glob("*.png"))) == 4
    code, _, err = run(capsys, "analyze", "correspondence", "--checkpoint", trained_run, "--images", tmp_path / "nope")
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1


def test_benchmark_throughput_prints_a_table(tmp_path, capsys):
    code, out, _ = run(capsys, "benchmark", "throughput", "--backbone", "vit_tiny", "--batch-size", "2",
                       "--image-size", "32", "--iters", "1", "--device", "cpu", "--json", tmp_path / "t.json")
    assert code == 0 and "| vit_tiny |" in out
    saved = json.loads((tmp_path / "t.json").read_text())["throughput"]["vit_tiny"]
    assert saved["images_per_s"] > 0 and saved["precision"] == "fp32" and saved["gmacs_per_image"] > 0
    code, _, err = run(capsys, "benchmark", "throughput", "--backbone", "vit_smal", "--device", "cpu")
    assert code == 2 and "did you mean 'vit_small'" in err


def test_analysis_commands_on_a_run(trained_run, tmp_path, capsys):
    code, out, _ = run(capsys, "analyze", "attention", "--checkpoint", trained_run, "--images", "digits",
                       "--limit", "2", "--out", tmp_path / "att")
    assert code == 0 and len(list((tmp_path / "att").glob("*.png"))) == 2
    code, out, _ = run(capsys, "analyze", "layers", "--a", trained_run, "--b", trained_run, "--data", "digits",
                       "--limit", "16", "--batch-size", "8", "--out", tmp_path / "cka")
    cka = json.loads((tmp_path / "cka" / "cka.json").read_text())["cka"]
    assert code == 0 and len(cka) == 3 and all(abs(cka[i][i] - 1) < 1e-4 for i in range(3))  # a model vs itself
    code, out, _ = run(capsys, "analyze", "attention-stats", "--checkpoint", trained_run, "--data", "digits",
                       "--limit", "8", "--out", tmp_path / "st")
    stats = json.loads((tmp_path / "st" / "attention_stats.json").read_text())
    assert code == 0 and len(stats["distance"]) == 2 and len(stats["distance"][0]) == 2  # depth 2, 2 heads
    assert (tmp_path / "st" / "attention_stats.png").exists()
