"""`key=value` overrides may come before and after options, as users type them."""

from __future__ import annotations

import pytest
import yaml

from vitssl.cli import main


def test_overrides_on_both_sides_of_an_option_all_apply(capsys):
    assert main(["config", "train.epochs=3", "--config", "demo_mnist", "train.batch_size=8", "optim.lr=0.5"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert (cfg["train"]["epochs"], cfg["train"]["batch_size"], cfg["optim"]["lr"]) == (3, 8, 0.5)


def test_a_stray_word_after_options_is_still_refused(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["config", "train.epochs=3", "--config", "demo_mnist", "stray"])
    assert stop.value.code == 2 and "unrecognized arguments: stray" in capsys.readouterr().err


def test_a_command_without_overrides_refuses_one(capsys):
    with pytest.raises(SystemExit):
        main(["presets", "train.epochs=3"])
    assert "unrecognized arguments" in capsys.readouterr().err
