"""`vitssl pretrain`'s own messages."""

from helpers import tiny_overrides
from vitssl.cli import main


def test_a_one_step_run_says_one_step(tmp_path, capsys):
    overrides = [o for o in tiny_overrides("digits") if not o.startswith("train.max_steps_per_epoch=")]
    assert main(["pretrain", "--method", "dino", "--out", str(tmp_path / "run"), *overrides,
                 "train.max_steps_per_epoch=1"]) == 0
    err = capsys.readouterr().err
    assert ", 1 step of 8 images ->" in err and "1 steps" not in err
