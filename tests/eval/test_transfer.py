"""`vitssl eval transfer` with the linear-probe protocol: sets found, missing and misfiled; the
table and JSON; features cached per checkpoint, reused, and recomputed when it changes."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import tiny_overrides
from vitssl.cli import main
from vitssl.commands.pretrain import pretrain
from vitssl.config import load_config
from vitssl.data import load_builtin
from vitssl.engine.outputs import OutputError
from vitssl.eval.transfer import protocols
from vitssl.eval.transfer.protocols import TransferOptions, eval_transform_for
from vitssl.eval.transfer.registry import TransferSet
from vitssl.eval.transfer.suite import run_suite
from vitssl.methods import method_configs

FAST = TransferOptions(image_size=16, batch_size=512, num_workers=0, device="cpu", cs=[0.1, 10.0])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dino")
    pretrain(load_config(None, ["method.name=dino", *tiny_overrides("digits")], method_configs()), folder)
    return folder


def image_folder(root, parts=("train", "test"), classes=("a", "b", "c"), n=6):
    rng = np.random.default_rng(0)
    for part in parts:
        for c, name in enumerate(classes):
            (root / part / name).mkdir(parents=True)
            for i in range(n):
                Image.fromarray((rng.random((20, 20, 3)) * 80 + 80 * c).astype(np.uint8)).save(root / part / name / f"{i}.png")


class CountExtraction:
    def __init__(self, monkeypatch):
        self.calls = 0
        real = protocols._features

        def counted(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(protocols, "_features", counted)


def test_suite_over_two_present_sets_and_a_missing_one(run, tmp_path, capsys):
    image_folder(tmp_path / "data" / "oxford-pets")  # ImageFolder layout, no val/: a fifth of train is held out
    summary = run_suite(run, "builtin", tmp_path / "out", root=tmp_path / "data",
                        sets=["builtin-digits", "oxford-pets", "cifar10"], options=FAST)
    printed = capsys.readouterr().out
    mentions = [line for line in printed.splitlines() if "cifar10" in line]
    assert len(mentions) == 2  # once in the list of where to put it, once under "missing:"
    assert f"cifar10: torchvision CIFAR10(root='{tmp_path / 'data'}/cifar10') files, or ImageFolder" in printed
    digits, pets = summary["rows"]
    test_images = len(load_builtin("digits", "val"))
    assert (digits["classes"], digits["test"], digits["train"] + digits["val"]) == (10, test_images, 1797 - test_images)
    assert (pets["classes"], pets["train"], pets["val"], pets["test"]) == (3, 15, 3, 18)
    assert pets["metric"] == "mean_per_class" and digits["metric"] == "top1"
    assert digits["C"] in (0.1, 10.0) and 0.0 <= digits["score"] <= 1.0
    assert digits["score"] > 0.3  # ten classes: chance is 0.1
    saved = json.loads((tmp_path / "out" / "suite.json").read_text())
    assert saved["missing"] == ["cifar10"] and [r["set"] for r in saved["rows"]] == ["builtin-digits", "oxford-pets"]
    assert json.loads((tmp_path / "out" / "builtin-digits.json").read_text())["val_scores"].keys() == {"0.1", "10"}
    for line in ("set", "builtin-digits", "oxford-pets", "mean per-class", "mean over 2 set(s)"):
        assert line in printed


@pytest.fixture(scope="module")
def finished(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("suite") / "out"
    run_suite(run, "builtin", out, sets=["builtin-digits"], options=FAST)
    return out


def test_a_rerun_keeps_finished_sets_and_reuses_the_cached_features(run, finished, tmp_path, monkeypatch):
    out = shutil.copytree(finished, tmp_path / "out")
    before = (out / "builtin-digits.json").read_text()
    count = CountExtraction(monkeypatch)
    run_suite(run, "builtin", out, sets=["builtin-digits"], options=FAST)
    assert count.calls == 0 and (out / "builtin-digits.json").read_text() == before
    run_suite(run, "builtin", out, sets=["builtin-digits"], options=FAST, overwrite=True)  # recomputed from the cache
    assert count.calls == 0


def test_a_changed_checkpoint_is_refused_then_its_features_are_recomputed(run, finished, tmp_path, monkeypatch):
    out = shutil.copytree(finished, tmp_path / "out")
    changed = shutil.copytree(run, tmp_path / "changed")
    payload = torch.load(changed / "checkpoint.pt", weights_only=True)
    key = next(k for k in payload["method"] if k.endswith("patch_embed.proj.weight") and "teacher" in k)
    payload["method"][key] = payload["method"][key] + 0.5
    torch.save(payload, changed / "checkpoint.pt")
    with pytest.raises(OutputError, match="another checkpoint: pass --overwrite"):
        run_suite(changed, "builtin", out, sets=["builtin-digits"], options=FAST)
    old_key = torch.load(out / "features" / "builtin-digits.pt", weights_only=True)["key"]
    count = CountExtraction(monkeypatch)
    run_suite(changed, "builtin", out, sets=["builtin-digits"], options=FAST, overwrite=True)
    assert count.calls == 3  # train, val and test again
    assert torch.load(out / "features" / "builtin-digits.pt", weights_only=True)["key"] != old_key


def test_other_options_into_the_same_folder_are_refused(run, finished, tmp_path):
    out = shutil.copytree(finished, tmp_path / "out")
    with pytest.raises(OutputError, match="other options"):
        run_suite(run, "builtin", out, sets=["builtin-digits"], options=TransferOptions(**{**vars(FAST), "cs": [1.0]}))


def cli(*argv):
    return main(["eval", "transfer", *argv, "--device", "cpu", "--num-workers", "0", "--image-size", "16"])


def test_a_set_folder_in_the_wrong_layout_is_one_line_naming_it_and_the_fix(run, tmp_path, capsys):
    (tmp_path / "data" / "resisc45").mkdir(parents=True)
    (tmp_path / "data" / "resisc45" / "notes.txt").write_text("x")
    code = cli("--checkpoint", str(run), "--suite", "elevater", "--root", str(tmp_path / "data"), "--out",
               str(tmp_path / "out"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "set 'resisc45'" in err and "train/CLASS/ and" in err
    assert not (tmp_path / "out").exists()


def test_a_torchvision_set_folder_without_its_files_names_the_set_and_where_they_go(run, tmp_path, capsys):
    (tmp_path / "data" / "cifar10").mkdir(parents=True)
    code = cli("--checkpoint", str(run), "--suite", "elevater", "--sets", "cifar10", "--root", str(tmp_path / "data"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "set 'cifar10'" in err and "torchvision CIFAR10" in err and "ImageFolder" in err


@pytest.mark.parametrize("argv, message", [
    (["--sets", "cifar11"], "unknown transfer set 'cifar11'"),
    (["--sets", "cifar10"], "pass --root DATA_ROOT"),
    (["--sets", "dtd", "--root", "nowhere"], "none of the 1 set(s)"),
])
def test_bad_invocations_are_one_line(run, argv, message, capsys):
    code = cli("--checkpoint", str(run), "--suite", "elevater", *argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err


def test_random_init_is_a_seeded_baseline_of_the_same_architecture(run, finished, tmp_path):
    from vitssl.eval.pretrained import untrained_backbone

    opts = TransferOptions(**{**vars(FAST), "random_init": True, "seed": 3})
    summary = run_suite(run, "builtin", tmp_path / "random", sets=["builtin-digits"], options=opts)
    assert summary["options"]["random_init"] is True and summary["rows"][0]["classes"] == 10
    random_feats = torch.load(tmp_path / "random" / "features" / "builtin-digits.pt", weights_only=True)["splits"]
    trained_feats = torch.load(finished / "features" / "builtin-digits.pt", weights_only=True)["splits"]
    assert not torch.equal(random_feats["test"][0], trained_feats["test"][0])
    backbone, _ = untrained_backbone(run, 3)  # the same seeded weights give the cached features
    images = torch.stack([eval_transform_for(TransferSet("x", "x", builtin="digits"), 16, None)(
        load_builtin("digits", "val")[i][0]) for i in range(4)])
    with torch.no_grad():
        assert torch.allclose(backbone.eval()(images).pooled, random_feats["test"][0][:4], atol=1e-5)


def test_random_init_of_a_weights_file_is_refused_in_one_line(tmp_path, capsys):
    torch.save({"cls_token": torch.zeros(1, 1, 8)}, tmp_path / "vit.pth")
    code = cli("--checkpoint", str(tmp_path / "vit.pth"), "--suite", "builtin", "--sets", "builtin-digits",
               "--random-init", "--out", str(tmp_path / "out"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--random-init builds the architecture from a vitssl run's config" in err


def test_the_parser_names_every_suite():
    from vitssl.commands.transfer import SUITE_NAMES
    from vitssl.eval.transfer.registry import SUITES

    assert SUITE_NAMES == tuple(SUITES)
