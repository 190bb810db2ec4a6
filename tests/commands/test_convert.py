"""Importing the original repositories' checkpoints (DINO, EsViT, SelfPatch, MAE-Lite).

The originals can't be downloaded here, so each test builds a tiny vitssl model, writes its
weights in the original repository's layout (key names from the reference code, listed by
hand below), imports that file and checks the imported model computes exactly what the
source model computes, with heads and centers where the original has them.
"""

import argparse
import pathlib
import re

import pytest
import torch

from helpers import TINY_BACKBONE, tiny_overrides
from vitssl.cli import main
from vitssl.commands.convert import import_checkpoint, load_original
from vitssl.config import load_config, to_objects
from vitssl.engine.checkpoint import CheckpointError
from vitssl.eval.pretrained import load_pretrained
from vitssl.methods import build_method, method_configs

TINY_SWIN = ["backbone.name=swin_tiny", "backbone.embed_dim=16", "backbone.depth=1", "backbone.num_heads=1",
             "backbone.img_size=32", "backbone.window_size=4", "backbone.mask_padding=false"]
HEADS = ["backbone.num_heads=2"]  # not in the weights: the tiny width has no standard head count


def source_method(name, extra=()):
    """A tiny method with every weight moved off its initialisation (seeded)."""
    overrides = [f"method.name={name}", *tiny_overrides(method=name), *extra]
    method = build_method(*_objs(overrides))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for key, value in method.state_dict().items():
            if value.is_floating_point() and not key.endswith(("pos_embed", "original0")):
                value.add_(0.05 * torch.randn(value.shape, generator=g))
    return method.eval()


def _objs(overrides):
    objs = to_objects(load_config(None, overrides, method_configs()))
    return objs.method, objs.backbone


def prefixed(prefix, state):
    return {prefix + k: v.clone() for k, v in state.items()}


def original_head(head):
    """vitssl DINOHead -> DINO's (old weight_norm names)."""
    return {k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v"): v
            for k, v in head.state_dict().items()}


VIT_BLOCK = ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
             "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"]


def dino_vit_keys(depth, cls=True, norm=True):
    """DINO's vision_transformer.py names for a ViT (SelfPatch: no cls_token, no final norm)."""
    keys = {"pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"}
    keys |= {f"blocks.{i}.{n}" for i in range(depth) for n in VIT_BLOCK}
    keys |= {"cls_token"} if cls else set()
    return keys | ({"norm.weight", "norm.bias"} if norm else set())


def same_outputs(a, b, size):
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ta, tb = a.eval()(x), b.eval()(x)
    assert torch.equal(ta.patches, tb.patches)
    assert (ta.cls is None and tb.cls is None) or torch.equal(ta.cls, tb.cls)


def same_state(imported, method, skip=()):
    ours = method.state_dict()
    assert set(imported) == set(ours)
    for k, v in ours.items():
        if not k.startswith(skip):
            assert torch.equal(imported[k], v), k


def imported_state(path):
    return torch.load(path, weights_only=True)["method"]


# -- DINO ----------------------------------------------------------------------------------

def dino_original(method):
    def network(net, prefix):
        return {**prefixed(prefix + "backbone.", net.backbone.state_dict()), **prefixed(prefix + "head.", original_head(net.head))}

    return {"student": network(method.student, "module."), "teacher": network(method.teacher, ""),
            "optimizer": {"state": {}, "param_groups": []}, "epoch": 100,
            "args": argparse.Namespace(arch="vit_small", patch_size=4, out_dim=64, norm_last_layer=True,
                                       output_dir=pathlib.PosixPath("/checkpoint/dino")),
            "dino_loss": {"center": method.loss.center.center.clone()}}


def test_dino_full_checkpoint(tmp_path):
    method = source_method("dino")
    with torch.no_grad():
        method.loss.center.center.normal_()
    raw = dino_original(method)
    assert set(k[len("backbone."):] for k in raw["teacher"] if k.startswith("backbone.")) == dino_vit_keys(2)
    torch.save(raw, tmp_path / "checkpoint.pth")
    loaded = load_original(tmp_path / "checkpoint.pth")  # weights_only, args Namespace, a PosixPath inside
    assert loaded["args"].arch == "vit_small" and loaded["epoch"] == 100
    result = import_checkpoint("dino", tmp_path / "checkpoint.pth", tmp_path / "run", HEADS)
    assert result.fresh == [] and result.path == tmp_path / "run" / "checkpoint.pt"
    same_state(imported_state(result.path), method)
    backbone, config = load_pretrained(tmp_path / "run")
    same_outputs(backbone, method.teacher.backbone, 16)
    assert config["method"]["head"]["out_dim"] == 64 and config["backbone"]["depth"] == 2


def test_dino_bare_backbone_fills_student_and_teacher(tmp_path):
    method = source_method("dino")
    torch.save(prefixed("", method.teacher.backbone.state_dict()), tmp_path / "dino_deitsmall16_pretrain.pth")
    result = import_checkpoint("dino", tmp_path / "dino_deitsmall16_pretrain.pth", tmp_path / "bare.pt", HEADS)
    assert result.fresh and all(k.startswith(("student.head", "teacher.head", "loss.")) for k in result.fresh)
    state = imported_state(tmp_path / "bare.pt")
    for k, v in method.teacher.backbone.state_dict().items():
        assert torch.equal(state[f"teacher.backbone.{k}"], v) and torch.equal(state[f"student.backbone.{k}"], v)
    same_outputs(load_pretrained(tmp_path / "bare.pt", "student")[0], method.teacher.backbone, 16)


def test_wrong_architecture_is_refused_with_keys_named(tmp_path):
    torch.save(dino_original(source_method("dino")), tmp_path / "dino.pth")
    with pytest.raises(CheckpointError, match=r"unexpected: .*blocks\.1\."):
        import_checkpoint("dino", tmp_path / "dino.pth", tmp_path / "a", [*HEADS, "backbone.depth=1"])
    with pytest.raises(CheckpointError, match=r"pos_embed|cls_token"):  # DINO's ViT has a CLS token
        import_checkpoint("selfpatch", tmp_path / "dino.pth", tmp_path / "b", HEADS)
    with pytest.raises(CheckpointError, match="no ViT backbone"):  # no `model` entry: not MAE-Lite's
        import_checkpoint("mae-lite", tmp_path / "dino.pth", tmp_path / "c", HEADS)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_unreadable_original_is_one_line(tmp_path):
    (tmp_path / "bad.pth").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="cannot be read") as err:
        load_original(tmp_path / "bad.pth")
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_original(tmp_path / "missing.pth")


# -- EsViT ---------------------------------------------------------------------------------

def swin_original(backbone):
    """timm Swin -> EsViT's swin_transformer.py: merging at the end of the previous stage, and
    the relative_position_index buffer of every block."""
    out = {}
    for k, v in backbone.state_dict().items():
        m = re.match(r"layers\.(\d+)\.downsample\.(.*)", k)
        out[f"layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}" if m else k] = v.clone()
    for s, stage in enumerate(backbone.layers):
        for j, block in enumerate(stage.blocks):
            n = block.window_size[0] * block.window_size[1]
            out[f"layers.{s}.blocks.{j}.attn.relative_position_index"] = torch.zeros(n, n, dtype=torch.long)
    return out


def esvit_original(method, region=True):
    def network(net, prefix):
        out = {**prefixed(prefix, swin_original(net.backbone)), **prefixed(prefix + "head.", original_head(net.head))}
        return {**out, **prefixed(prefix + "head_dense.", original_head(net.region_head))} if region else out

    loss = {"center": method.loss.center.center.clone()}
    if region:
        loss["center_grid"] = method.region_loss.center.center.clone()
    return {"student": network(method.student, "module."), "teacher": network(method.teacher, ""),
            "args": argparse.Namespace(arch="swin_tiny", use_dense_prediction=region), "dino_loss": loss}


def test_esvit_swin_checkpoint(tmp_path):
    method = source_method("esvit", TINY_SWIN)
    raw = esvit_original(method)
    assert "layers.0.downsample.reduction.weight" in raw["teacher"] and "layers.3.downsample.norm.weight" not in raw["teacher"]
    torch.save(raw, tmp_path / "esvit.pth")
    result = import_checkpoint("esvit", tmp_path / "esvit.pth", tmp_path / "run")  # sizes, windows from shapes
    assert result.fresh == [] and all("relative_position_index" in k for k in result.dropped)
    same_state(imported_state(result.path), method)
    backbone, config = load_pretrained(tmp_path / "run")
    assert config["backbone"]["window_size"] == 4 and config["backbone"]["img_size"] == 32
    assert config["backbone"]["mask_padding"] is False  # the original's padding
    same_outputs(backbone, method.teacher.backbone, 32)


def test_esvit_view_only_checkpoint_keeps_a_fresh_region_head(tmp_path):
    method = source_method("esvit", TINY_SWIN)
    torch.save(esvit_original(method, region=False), tmp_path / "view_only.pth")
    result = import_checkpoint("esvit", tmp_path / "view_only.pth", tmp_path / "v.pt")
    assert result.fresh and all("region" in k for k in result.fresh)
    same_state(imported_state(result.path), method, skip=("student.region_head", "teacher.region_head", "region_loss"))


# -- SelfPatch -----------------------------------------------------------------------------

def ca_head_original(aggregator):
    """PatchAggregator -> SelfPatch's SelfPatchHead: cls_token, cls_blocks with separate q, k, v."""
    out = {}
    for k, v in aggregator.state_dict().items():
        if k == "query":
            out["cls_token"] = v.clone()
        elif ".attn.kv." in k:
            k_part, v_part = v.clone().chunk(2)
            out[k.replace("blocks.", "cls_blocks.").replace(".kv.", ".k.")] = k_part
            out[k.replace("blocks.", "cls_blocks.").replace(".kv.", ".v.")] = v_part
        else:
            out[k.replace("blocks.", "cls_blocks.", 1)] = v.clone()
    return out


def selfpatch_original(method):
    def network(net, prefix):
        return {**prefixed(prefix + "backbone.", net.backbone.state_dict()),
                **prefixed(prefix + "ca_head.", ca_head_original(net.aggregator)),
                **prefixed(prefix + "c_head.", original_head(net.image_head)),
                **prefixed(prefix + "p_head.", original_head(net.patch_head))}

    return {"student": network(method.student, "module."), "teacher": network(method.teacher, ""),
            "args": argparse.Namespace(arch="vit_small", k_num=4),
            "dino_loss": {"center": method.image_center.center.clone().reshape(1, 1, -1),
                          "patch_center": method.patch_loss.center.center.clone()}}


def test_selfpatch_checkpoint(tmp_path):
    method = source_method("selfpatch")
    with torch.no_grad():
        method.image_center.center.normal_()
        method.patch_loss.center.center.normal_()
    raw = selfpatch_original(method)
    backbone_keys = {k[len("backbone."):] for k in raw["teacher"] if k.startswith("backbone.")}
    assert backbone_keys == dino_vit_keys(2, cls=False, norm=False)
    assert {"ca_head.cls_blocks.0.attn.k.weight", "ca_head.cls_blocks.1.attn.v.bias", "ca_head.cls_token",
            "ca_head.norm.weight"} <= set(raw["teacher"])
    torch.save(raw, tmp_path / "selfpatch.pth")
    result = import_checkpoint("selfpatch", tmp_path / "selfpatch.pth", tmp_path / "run", HEADS)
    assert result.fresh == []
    same_state(imported_state(result.path), method)
    backbone, _ = load_pretrained(tmp_path / "run")  # CLS-free ViT + aggregator: its image token
    same_outputs(backbone, method.evaluation_backbone(), 16)


# -- MAE-Lite ------------------------------------------------------------------------------

MAE_DECODER = [("decoder.embed.", "decoder_embed."), ("decoder.mask_token", "mask_token"),
               ("decoder.pos_embed", "decoder_pos_embed"), ("decoder.blocks.", "decoder_blocks."),
               ("decoder.norm.", "decoder_norm."), ("decoder.pred.", "decoder_pred.")]


def mae_original(method):
    """MAE-Lite's checkpoint: {"model": ...} of the DDP-wrapped MAE wrapper (`module.model.`)."""
    model = prefixed("encoder.", method.encoder.state_dict())
    model.update(prefixed("decoder.", method.decoder.state_dict()))
    out = {}
    for k, v in model.items():
        if k.startswith("encoder."):
            out[k[len("encoder."):]] = v
        else:
            ours, theirs = next(p for p in MAE_DECODER if k.startswith(p[0]))
            out[theirs + k[len(ours):]] = v
    return {"model": prefixed("module.model.", out), "start_epoch": 400, "optimizer": {}, "best_top1": 0.0}


def test_mae_lite_checkpoint_with_decoder(tmp_path):
    method = source_method("mae")
    raw = mae_original(method)
    encoder = {k[len("module.model."):] for k in raw["model"] if not k.startswith(("module.model.decoder", "module.model.mask"))}
    assert encoder == dino_vit_keys(2)
    torch.save(raw, tmp_path / "mae_tiny_400e.pth.tar")
    result = import_checkpoint("mae-lite", tmp_path / "mae_tiny_400e.pth.tar", tmp_path / "run",
                               [*HEADS, "method.decoder.num_heads=2"])
    assert result.fresh == []
    same_state(imported_state(result.path), method)
    same_outputs(load_pretrained(tmp_path / "run")[0], method.encoder, 16)


def test_mae_lite_bare_encoder(tmp_path):
    method = source_method("mae")
    torch.save({"model": prefixed("encoder.", method.encoder.state_dict())}, tmp_path / "enc.pth")
    result = import_checkpoint("mae-lite", tmp_path / "enc.pth", tmp_path / "enc.pt", HEADS)
    assert result.fresh and all(k.startswith("decoder.") for k in result.fresh)
    same_outputs(load_pretrained(tmp_path / "enc.pt")[0], method.encoder, 16)


# -- the command line and continued pre-training ---------------------------------------------

def test_import_cli_then_eval_and_init_from(tmp_path, capsys):
    from vitssl.commands.pretrain import pretrain

    method = source_method("dino")
    torch.save(dino_original(method), tmp_path / "dino.pth")
    assert main(["import", "--from", "dino", "--checkpoint", str(tmp_path / "dino.pth"), "--out",
                 str(tmp_path / "imported"), *HEADS]) == 0
    assert "imported" in capsys.readouterr().out
    assert main(["eval", "knn", "--checkpoint", str(tmp_path / "imported"), "--train", "digits", "--val", "digits",
                 "--image-size", "16", "--num-workers", "0", "--device", "cpu", "--ks", "5"]) == 0
    assert (tmp_path / "imported" / "eval_knn.json").exists()
    cfg = load_config(None, [*tiny_overrides(), f"init_from={tmp_path / 'imported'}"], method_configs())
    trainer = pretrain(cfg, tmp_path / "continued")
    assert trainer.step == 2
    assert main(["import", "--from", "dino", "--checkpoint", str(tmp_path / "missing.pth"), "--out",
                 str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert TINY_BACKBONE["depth"] == 2
