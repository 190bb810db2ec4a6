"""`vitssl pretrain`'s own messages."""

from helpers import tiny_overrides
from vitssl.cli import main


def test_a_one_step_run_says_one_step(tmp_path, capsys):
    overrides = [o for o in tiny_overrides("digits") if not o.startswith("train.max_steps_per_epoch=")]
    assert main(["pretrain", "--method", "dino", "--out", str(tmp_path / "run"), *overrides,
                 "train.max_steps_per_epoch=1"]) == 0
    err = capsys.readouterr().err
    assert ", 1 step of 8 images ->" in err and "1 steps" not in err


def test_resume_accepts_the_runs_own_image_size_and_keeps_its_other_sizes(tmp_path, capsys, one_thread):
    """--image-size equal to the run's size is accepted silently and re-derives nothing (the run's
    own local crop size, not DINO's ratio, stays); the resumed run trains on."""
    import yaml

    run = tmp_path / "run"
    assert main(["pretrain", "--out", str(run), *tiny_overrides("digits"), "method.crops.local_crops_size=12"]) == 0
    before = yaml.safe_load((run / "config.yaml").read_text())
    assert main(["pretrain", "--resume", str(run), "--image-size", "16", "train.epochs=2"]) == 0
    after = yaml.safe_load((run / "config.yaml").read_text())
    assert after["method"]["crops"] == before["method"]["crops"] and after["method"]["crops"]["local_crops_size"] == 12
    assert after["backbone"] == before["backbone"] and after["train"]["epochs"] == 2
    assert "pre-training done: 4 steps" in capsys.readouterr().out
