"""D-MAE-Lite (`mae-distill`): the frozen MAE teacher, what it sees, the loss and its gradients,
the fused-attention guarantee, config errors, and CLI runs with resume."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from helpers import count_sdpa, one_batch, tiny_mae_teacher, tiny_overrides
from vitssl.backbones.attention_capture import AttentionCapture
from vitssl.cli import main
from vitssl.config import load_config, to_objects
from vitssl.engine.checkpoint import CheckpointError
from vitssl.engine.protocol import StepContext
from vitssl.losses.attention_distill import distillation_mse
from vitssl.methods import MAE, build_method, method_configs
from vitssl.methods.mae_distill import MAEDistill

CTX = StepContext(step=0, epoch=0, steps_per_epoch=1, total_steps=1, epochs=1)


def distill_method(*overrides: str, teacher=None) -> MAEDistill:
    teacher = teacher or tiny_mae_teacher()
    cfg = load_config(None, ["method.name=mae-distill", *tiny_overrides(method="mae"), f"method.teacher={teacher}",
                             *overrides], method_configs())
    objs = to_objects(cfg)
    return build_method(objs.method, objs.backbone)


def record_ids_keep(encoder, seen: list[torch.Tensor]) -> None:
    """Make `encoder.forward_masked` note the visible indices it is given."""
    original = encoder.forward_masked

    def recording(images, ids_keep):
        seen.append(ids_keep.clone())
        return original(images, ids_keep)

    encoder.forward_masked = recording


def manual_logits(vit, layer: int, seen_inputs: dict[int, torch.Tensor]) -> torch.Tensor:
    """q·kᵀ/√d of `vit.blocks[layer]` recomputed from its LayerNorm'd input."""
    attn, x = vit.blocks[layer].attn, seen_inputs[layer]
    b, n, _ = x.shape
    qkv = F.linear(x, attn.qkv.weight, attn.qkv.bias).reshape(b, n, 3, attn.num_heads, -1)
    q, k = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)
    return q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5


def record_norm1(vit, store: dict[int, torch.Tensor]) -> None:
    for i, block in enumerate(vit.blocks):
        block.norm1.register_forward_hook(lambda m, a, out, i=i: store.__setitem__(i, out.detach()))


# -- teacher ---------------------------------------------------------------------------------

def test_teacher_is_the_frozen_encoder_of_the_checkpoint():
    method = distill_method()
    payload = torch.load(tiny_mae_teacher(), weights_only=True)
    teacher = method.teacher
    assert teacher.embed_dim == 48 and method.encoder.embed_dim == 32  # bigger than the student
    assert not hasattr(teacher, "decoder") and not any(k.startswith("decoder.") for k in teacher.state_dict())
    for name, value in teacher.state_dict().items():
        torch.testing.assert_close(value, payload["method"][f"encoder.{name}"], rtol=0, atol=0)
    assert not any(p.requires_grad for p in teacher.parameters())
    assert not any(n.startswith("teacher.") for n, _ in method.trainable_parameters())
    method.train()
    assert method.encoder.training and not teacher.training


def test_teacher_is_left_out_of_the_state_dict_and_loading_still_is_strict():
    method = distill_method()
    state = method.state_dict()
    assert state and not any(k.startswith("teacher.") for k in state)
    assert "attn_adapters.0.mix.weight" in state
    other = distill_method()
    other.load_state_dict(state)  # strict: only the teacher may be absent
    torch.testing.assert_close(other.attn_adapters[0].mix.weight, method.attn_adapters[0].mix.weight)
    del state["attn_adapters.0.mix.weight"]
    with pytest.raises(RuntimeError, match="attn_adapters"):
        other.load_state_dict(state)


def test_adapter_maps_student_heads_to_teacher_heads():
    method = distill_method()  # student 2 heads, teacher 3
    assert method.attn_adapters[0].mix.weight.shape == (3, 2, 1, 1)
    assert method.attn_adapters[0].mix.bias is None
    same = distill_method(teacher=tiny_mae_teacher(embed_dim=32, num_heads=2))
    assert same.attn_adapters[0].mix.weight.shape == (2, 2, 1, 1)  # used even when the counts match
    logits = torch.randn(4, 2, 5, 5)
    assert method.attn_adapters[0](logits).shape == (4, 3, 5, 5)


def test_teacher_sees_exactly_the_students_visible_patches():
    method = distill_method()
    student_ids, teacher_ids = [], []
    record_ids_keep(method.encoder, student_ids)
    record_ids_keep(method.teacher, teacher_ids)
    images, _ = one_batch(method)
    method.training_step((images, None), CTX)
    assert len(student_ids) == len(teacher_ids) == 1
    assert torch.equal(student_ids[0], teacher_ids[0])
    assert student_ids[0].shape == (4, 4)  # 16 patches, 75% masked


# -- loss and gradients ----------------------------------------------------------------------

def test_attention_loss_is_the_mse_of_mixed_student_logits_to_teacher_logits():
    method = distill_method("method.attn_alpha=0.5")
    student_in, teacher_in = {}, {}
    record_norm1(method.encoder, student_in)
    record_norm1(method.teacher, teacher_in)
    out = method.training_step(one_batch(method), CTX)
    student = manual_logits(method.encoder, 1, student_in)
    teacher = manual_logits(method.teacher, 1, teacher_in)
    assert student.shape == (4, 2, 5, 5) and teacher.shape == (4, 3, 5, 5)  # CLS + 4 visible
    expected = F.mse_loss(method.attn_adapters[0](student), teacher)
    torch.testing.assert_close(out.metrics["attn_loss"], expected.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.loss.detach(), out.metrics["mae_loss"] + 0.5 * out.metrics["attn_loss"])


def test_gradients_reach_student_and_adapter_but_never_the_teacher():
    method = distill_method()
    out = method.training_step(one_batch(method), CTX)
    out.loss.backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    assert method.attn_adapters[0].mix.weight.grad.abs().sum() > 0
    # the distilled block's query/key projection gets gradient from the attention term
    assert method.encoder.blocks[1].attn.qkv.weight.grad.abs().sum() > 0
    assert method.decoder.pred.weight.grad.abs().sum() > 0


def test_attention_loss_alone_trains_the_distilled_block_not_the_decoder():
    method = distill_method()
    images, _ = one_batch(method)
    with AttentionCapture(method.encoder, [1]) as cap:
        _, _, ids_keep = method.forward_with_keep(images)
    teacher_logits, _ = method.teacher_targets(images, ids_keep)
    distillation_mse(method.attn_adapters[0](cap.logits[1]), teacher_logits[1]).backward()
    assert method.encoder.blocks[1].attn.qkv.weight.grad.abs().sum() > 0
    assert method.decoder.pred.weight.grad is None
    assert not teacher_logits[1].requires_grad


def test_attn_alpha_zero_gives_exactly_the_mae_loss_and_skips_the_teacher():
    method = distill_method("method.attn_alpha=0")
    assert len(method.attn_adapters) == 0
    method.teacher.forward_masked = lambda *a: pytest.fail("the teacher ran with every distillation weight 0")
    batch = one_batch(method)
    torch.manual_seed(7)
    loss = method.training_step(batch, CTX).loss
    torch.manual_seed(7)
    reference = MAE.training_step(method, batch, CTX).loss
    assert torch.equal(loss, reference)


def test_hidden_state_distillation_maps_normed_block_inputs_to_the_teacher_width():
    method = distill_method("method.distill_hidden_layers=[0,-1]", "method.hidden_alpha=2.0")
    adapters = method.hidden_adapters
    assert len(adapters) == 2 and adapters[0].weight.shape == (48, 32) and adapters[0].bias is None
    student_in, teacher_in = {}, {}
    record_norm1(method.encoder, student_in)
    record_norm1(method.teacher, teacher_in)
    out = method.training_step(one_batch(method), CTX)
    expected = sum(F.mse_loss(adapters[i](student_in[i]), teacher_in[i]) for i in (0, 1))
    torch.testing.assert_close(out.metrics["hidden_loss"], expected.detach(), rtol=1e-5, atol=1e-6)
    total = out.metrics["mae_loss"] + out.metrics["attn_loss"] + 2.0 * out.metrics["hidden_loss"]
    torch.testing.assert_close(out.loss.detach(), total)
    out.loss.backward()
    assert all(a.weight.grad.abs().sum() > 0 for a in adapters)


@pytest.mark.parametrize("layers, fused", [("[-1]", 3), ("[0,1]", 1)])
def test_only_distilled_blocks_leave_the_fused_attention_path(monkeypatch, layers, fused):
    method = distill_method(f"method.distill_attn_layers={layers}")
    for vit in (method.encoder, method.teacher, method.decoder):
        for block in vit.blocks:
            block.attn.fused_attn = True
    calls = count_sdpa(monkeypatch)
    method.training_step(one_batch(method), CTX)
    # student 2 blocks + teacher 2 blocks + decoder 1 block, less the distilled block of each model
    assert calls[0] == fused
    assert all("forward" not in block.attn.__dict__ for block in [*method.encoder.blocks, *method.teacher.blocks])


# -- errors ----------------------------------------------------------------------------------

def test_missing_or_unusable_teacher_gives_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="--teacher CHECKPOINT"):
        distill_method(teacher='""')
    with pytest.raises(CheckpointError, match="method.teacher: checkpoint .* does not exist"):
        distill_method(teacher=tmp_path / "nope")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="method.teacher: .*cannot be read"):
        distill_method(teacher=tmp_path / "junk.pt")
    payload = torch.load(tiny_mae_teacher(), weights_only=True)
    payload["config"]["method"]["name"] = "dino"
    torch.save(payload, tmp_path / "dino.pt")
    with pytest.raises(CheckpointError, match="must be an MAE run"):
        distill_method(teacher=tmp_path / "dino.pt")


def test_teacher_with_another_patch_size_is_refused(tmp_path):
    payload = torch.load(tiny_mae_teacher(), weights_only=True)
    payload["config"]["backbone"]["patch_size"] = 8
    payload["method"]["encoder.patch_embed.proj.weight"] = torch.zeros(48, 3, 8, 8)
    payload["method"]["encoder.pos_embed"] = torch.zeros(1, 5, 48)
    torch.save(payload, tmp_path / "p8.pt")
    with pytest.raises(ValueError, match="patch size 8 .* student 4"):
        distill_method(teacher=tmp_path / "p8.pt")


@pytest.mark.parametrize("override, message", [
    ("method.distill_attn_layers=[2]", "out of range for the 2-block student"),
    ("method.distill_attn_layers=[1,-1]", "names a block twice"),
    ("method.attn_alpha=-1", r"method.attn_alpha=-1.0 is out of range: use a finite number >= 0$"),
])
def test_bad_distillation_options(override, message):
    with pytest.raises(ValueError, match=message):
        distill_method(override)


# -- end to end ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def distill_run(tmp_path_factory):
    """A 2-epoch (4-step) mae-distill run started from the CLI with --teacher, with a snapshot
    after epoch 1."""
    run_dir = tmp_path_factory.mktemp("dmae") / "run"
    argv = ["pretrain", "--method", "mae-distill", "--teacher", str(tiny_mae_teacher()), "--data", "digits",
            "--out", str(run_dir), *tiny_overrides("digits", method="mae")[1:], "train.epochs=2",
            "train.save_every_epochs=1"]
    assert main(argv) == 0
    return run_dir


def halfway(run_dir, folder):
    """A copy of `run_dir` as it was after epoch 1, ready for --resume."""
    folder.mkdir()
    shutil.copy(run_dir / "config.yaml", folder / "config.yaml")
    shutil.copy(run_dir / "checkpoint_epoch0001.pt", folder / "checkpoint.pt")
    return folder


def test_cli_run_saves_the_student_only(distill_run):
    last = torch.load(distill_run / "checkpoint.pt", weights_only=True)
    assert last["step"] == 4 and not any(k.startswith("teacher.") for k in last["method"])
    assert last["config"]["method"]["teacher"] == str(tiny_mae_teacher())
    lines = [json.loads(line) for line in (distill_run / "metrics.jsonl").read_text().splitlines()]
    assert any("attn_loss" in line for line in lines)


def test_resume_rebuilds_the_teacher_and_continues_exactly(distill_run, tmp_path):
    run_dir = halfway(distill_run, tmp_path / "run")
    assert main(["pretrain", "--resume", str(run_dir)]) == 0  # the teacher comes from the saved config
    resumed = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    straight = torch.load(distill_run / "checkpoint.pt", weights_only=True)
    assert resumed["step"] == 4
    for key, value in straight["method"].items():
        torch.testing.assert_close(resumed["method"][key], value, rtol=0, atol=0, msg=key)


def test_resume_can_point_at_a_moved_teacher(distill_run, tmp_path):
    run_dir = halfway(distill_run, tmp_path / "run")
    moved = shutil.copy(tiny_mae_teacher(), tmp_path / "moved_teacher.pt")
    assert main(["pretrain", "--resume", str(run_dir), "--teacher", str(moved)]) == 0
    last = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert last["step"] == 4 and last["config"]["method"]["teacher"] == str(moved)


def test_cli_without_teacher_is_a_one_line_error(tmp_path, capsys):
    code = main(["pretrain", "--method", "mae-distill", "--data", "digits", "--out", str(tmp_path / "run"),
                 *tiny_overrides("digits", method="mae")[1:]])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--teacher CHECKPOINT" in err


def test_evaluation_loads_the_student_without_the_teacher_file(distill_run, tmp_path):
    from vitssl.eval.pretrained import load_pretrained

    copy = tmp_path / "checkpoint.pt"
    payload = torch.load(distill_run / "checkpoint.pt", weights_only=True)
    payload["config"]["method"]["teacher"] = str(tmp_path / "gone.pt")  # the teacher file is not needed
    torch.save(payload, copy)
    backbone, _ = load_pretrained(copy)
    encoder = {k[len("encoder."):]: v for k, v in payload["method"].items() if k.startswith("encoder.")}
    for key, value in backbone.state_dict().items():
        torch.testing.assert_close(value, encoder[key], rtol=0, atol=0, msg=key)


def test_scratch_baseline_of_a_distillation_preset_needs_no_teacher():
    from vitssl.eval.pretrained import untrained_backbone

    backbone, config = untrained_backbone("dmae_lite_vit_tiny16")  # the preset names no teacher
    assert config["method"]["name"] == "mae-distill" and backbone.embed_dim == 192
