"""AttentionCapture: logits match q·kᵀ/√d, outputs match the fused path, gradients flow,
untouched blocks stay fused, and exit restores everything."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers import count_sdpa
from vitssl.backbones.attention_capture import AttentionCapture
from vitssl.backbones.vit import ViT

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors gain nothing from threads


def tiny_vit(**kw) -> ViT:
    vit = ViT(embed_dim=32, depth=2, num_heads=2, patch_size=4, img_size=16, **kw)
    for block in vit.blocks:
        block.attn.fused_attn = True
    return vit


def block_inputs(vit: ViT, x: torch.Tensor) -> dict[int, torch.Tensor]:
    """What each block's attention receives (the output of its norm1)."""
    seen: dict[int, torch.Tensor] = {}
    hooks = [b.norm1.register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(i, o))
             for i, b in enumerate(vit.blocks)]
    vit(x)
    for h in hooks:
        h.remove()
    return seen


def manual_logits(attn: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    b, n, _ = x.shape
    qkv = F.linear(x, attn.qkv.weight, attn.qkv.bias).reshape(b, n, 3, attn.num_heads, -1)
    q, k = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)
    return q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5


@pytest.mark.parametrize("class_token", [True, False])
def test_logits_equal_manual_qk(class_token: bool) -> None:
    vit = tiny_vit(class_token=class_token).eval()
    x = torch.randn(2, 3, 16, 16)
    inputs = block_inputs(vit, x)
    with AttentionCapture(vit, [0, -1]) as cap:
        vit(x)
    assert set(cap.logits) == {0, 1}
    tokens = 16 + vit.num_prefix_tokens
    for i in (0, 1):
        assert cap.logits[i].shape == (2, 2, tokens, tokens)
        torch.testing.assert_close(cap.logits[i], manual_logits(vit.blocks[i].attn, inputs[i]))
    torch.testing.assert_close(cap.probs(-1).sum(-1), torch.ones(2, 2, tokens))


def test_output_equals_fused_path() -> None:
    vit = tiny_vit().eval()
    x = torch.randn(3, 3, 16, 16)
    reference = vit(x)
    with AttentionCapture(vit, [0, 1]):
        captured = vit(x)
    torch.testing.assert_close(captured.cls, reference.cls, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(captured.patches, reference.patches, atol=1e-5, rtol=1e-5)


def test_mask_is_applied_but_not_recorded() -> None:
    attn = tiny_vit().blocks[0].attn.eval()
    x = torch.randn(2, 5, 32)
    mask = torch.ones(5, 5, dtype=torch.bool)
    mask[:, 3:] = False
    reference = attn(x, attn_mask=mask)
    model = torch.nn.Module()
    model.blocks = torch.nn.ModuleList([torch.nn.Module()])
    model.blocks[0].attn = attn
    with AttentionCapture(model, [0]) as cap:
        out = attn(x, attn_mask=mask)
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(cap.logits[0]).all()
    assert (cap.probs(0)[..., 3:] == 0).all()


def test_gradients_reach_student_through_logits() -> None:
    vit = tiny_vit().train()
    with AttentionCapture(vit, [-1]) as cap:
        vit(torch.randn(2, 3, 16, 16))
    assert cap.logits[1].requires_grad
    cap.logits[1].pow(2).mean().backward()
    for p in (vit.blocks[1].attn.qkv.weight, vit.blocks[0].mlp.fc1.weight, vit.patch_embed.proj.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert vit.blocks[1].attn.proj.weight.grad is None  # logits come before the output projection


def test_attention_dropout_applies_in_training_only() -> None:
    vit = tiny_vit()
    vit.blocks[1].attn.attn_drop.p = 0.5
    x = torch.randn(2, 3, 16, 16)
    with AttentionCapture(vit, [1]):
        vit.train()
        a, b = vit(x).patches, vit(x).patches
        vit.eval()
        c, d = vit(x).patches, vit(x).patches
    assert not torch.allclose(a, b)
    torch.testing.assert_close(c, d)


def test_other_blocks_keep_fused_attention(monkeypatch: pytest.MonkeyPatch) -> None:
    vit = tiny_vit().eval()
    calls = count_sdpa(monkeypatch)
    x = torch.randn(1, 3, 16, 16)
    vit(x)
    assert calls[0] == 2
    with AttentionCapture(vit, [1]) as cap:
        vit(x)
    assert calls[0] == 3  # only block 0 went through the fused kernel
    assert set(cap.logits) == {1}
    vit(x)
    assert calls[0] == 5


def test_exit_restores_forward_even_after_an_error() -> None:
    vit = tiny_vit().eval()
    attn = vit.blocks[0].attn
    assert "forward" not in attn.__dict__
    with pytest.raises(RuntimeError, match="boom"):
        with AttentionCapture(vit, [0]):
            assert "forward" in attn.__dict__
            raise RuntimeError("boom")
    assert "forward" not in attn.__dict__
    with AttentionCapture(vit, [0]) as cap:
        vit(torch.randn(1, 3, 16, 16))
    kept = cap.logits[0]
    vit(torch.randn(1, 3, 16, 16))
    assert cap.logits[0] is kept  # no recording after exit


def test_earlier_instance_forward_is_put_back() -> None:
    vit = tiny_vit()
    attn = vit.blocks[0].attn
    custom = attn.forward  # a bound method stored on the instance, as another tool might do
    attn.forward = custom
    with AttentionCapture(vit, [0]):
        pass
    assert attn.__dict__["forward"] is custom


def test_clear_errors() -> None:
    vit = tiny_vit()
    with pytest.raises(IndexError, match="out of range"):
        AttentionCapture(vit, [2])
    with pytest.raises(IndexError, match="out of range"):
        AttentionCapture(vit, [-3])
    with pytest.raises(ValueError, match="no `.blocks`"):
        AttentionCapture(torch.nn.Linear(2, 2), [0])
    cap = AttentionCapture(vit, [0])
    with pytest.raises(KeyError, match="no logits"):
        cap.probs(0)
    with AttentionCapture(vit, [1]):
        with pytest.raises(RuntimeError, match="already captured"):
            with AttentionCapture(vit, [0, 1]):
                pass
        assert "forward" not in vit.blocks[0].attn.__dict__  # the failed capture undid block 0
    assert "forward" not in vit.blocks[1].attn.__dict__
