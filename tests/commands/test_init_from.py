"""Starting a run from another run's weights: EsViT's region task after a view-only DINO run."""

import pytest
import torch

from helpers import tiny_overrides
from vitssl.commands.pretrain import initialise_from, pretrain
from vitssl.config import load_config, to_objects
from vitssl.engine.checkpoint import CheckpointError
from vitssl.methods import build_method, method_configs

REGION = ["method.region_head.out_dim=48", "method.region_head.hidden_dim=32", "method.region_head.bottleneck_dim=16"]


@pytest.fixture(scope="module")
def dino_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("dino")
    pretrain(load_config(None, ["method.name=dino", *tiny_overrides("digits")], method_configs()), run)
    return run


def test_esvit_continues_a_view_only_run_with_a_fresh_region_head(dino_run, tmp_path, caplog):
    cfg = load_config(None, ["method.name=esvit", *tiny_overrides("digits"), *REGION, f"init_from={dino_run}"],
                      method_configs())
    saved = torch.load(dino_run / "checkpoint.pt", weights_only=True)["method"]
    objs = to_objects(cfg)
    method = build_method(objs.method, objs.backbone)
    with caplog.at_level("INFO", logger="vitssl"):
        initialise_from(method, dino_run)
    state = method.state_dict()
    for key in ("teacher.backbone.blocks.0.attn.qkv.weight", "student.head.mlp.0.weight", "loss.center.center"):
        assert torch.equal(state[key], saved[key])
    assert "student.region_head" in caplog.text and "teacher.region_head" in caplog.text
    trainer = pretrain(cfg, tmp_path / "esvit")  # and the run itself trains
    assert trainer.step == 2


def test_init_from_a_checkpoint_of_another_model_is_refused(dino_run):
    objs = to_objects(load_config(None, ["method.name=selfpatch", *tiny_overrides()], method_configs()))
    method = build_method(objs.method, objs.backbone)
    with pytest.raises(CheckpointError, match="does not fit this model .*pos_embed.*unexpected: student.backbone.cls_token"):
        initialise_from(method, dino_run)
