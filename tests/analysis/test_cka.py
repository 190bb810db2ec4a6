"""Mini-batch linear CKA: the unbiased HSIC formula, CKA's invariances, and ViT layer features."""

from __future__ import annotations

import pytest
import torch

from vitssl.analysis.cka import MinibatchCKA, cka_heatmap, cka_matrix, hsic1, layer_features
from vitssl.backbones.vit import ViT


def tiny_vit(**kw) -> ViT:
    return ViT(embed_dim=32, depth=2, num_heads=2, patch_size=4, img_size=16, **kw).eval()


def cka_of(a: torch.Tensor, b: torch.Tensor) -> float:
    cka = MinibatchCKA()
    cka.update([a], [b])
    return cka.compute().item()


def test_hsic1_matches_the_matrix_formula() -> None:
    n = 9
    x, y = torch.randn(n, 5, dtype=torch.float64), torch.randn(n, 7, dtype=torch.float64)
    k, l = x @ x.T, y @ y.T  # noqa: E741
    k.fill_diagonal_(0)
    l.fill_diagonal_(0)
    one = torch.ones(n, 1, dtype=torch.float64)
    expected = (torch.trace(k @ l) + (one.T @ k @ one) * (one.T @ l @ one) / ((n - 1) * (n - 2))
                - 2 / (n - 2) * (one.T @ k @ l @ one)) / (n * (n - 3))
    torch.testing.assert_close(hsic1(k[None], l[None]), expected)


def test_cka_of_a_representation_with_itself_is_one() -> None:
    x = torch.randn(16, 10)
    assert cka_of(x, x) == pytest.approx(1.0, abs=1e-6)


def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling() -> None:
    x = torch.randn(20, 12)
    q, _ = torch.linalg.qr(torch.randn(12, 12))
    assert cka_of(x, x @ q) == pytest.approx(1.0, abs=1e-5)
    assert cka_of(x, 3.7 * x) == pytest.approx(1.0, abs=1e-6)
    y = torch.randn(20, 6)
    assert cka_of(x @ q * 0.2, y) == pytest.approx(cka_of(x, y), abs=1e-5)


def test_minibatch_cka_of_independent_representations_is_near_zero() -> None:
    cka = MinibatchCKA()
    for _ in range(40):
        cka.update([torch.randn(32, 256)], [torch.randn(32, 256)])
    assert abs(cka.compute().item()) < 0.05


def test_layer_matrix_and_self_comparison() -> None:
    x, y = torch.randn(8, 6), torch.randn(8, 4)
    cka = MinibatchCKA()
    cka.update([x, y], [2 * y, x, x + 0.01 * torch.randn(8, 6)])
    m = cka.compute()
    assert m.shape == (2, 3)
    assert m[0, 1] == pytest.approx(1.0, abs=1e-6) and m[1, 0] == pytest.approx(1.0, abs=1e-6)
    alone = MinibatchCKA()
    alone.update([x, y])
    alone.update([y.repeat(1, 2), x])
    both = MinibatchCKA()
    both.update([x, y], [x, y])
    both.update([y.repeat(1, 2), x], [y.repeat(1, 2), x])
    torch.testing.assert_close(alone.compute(), both.compute())


def test_cka_errors() -> None:
    with pytest.raises(ValueError, match="at least 4"):
        MinibatchCKA().update([torch.randn(3, 2)], [torch.randn(3, 2)])
    with pytest.raises(ValueError, match="different batches"):
        MinibatchCKA().update([torch.randn(5, 2)], [torch.randn(6, 2)])
    with pytest.raises(RuntimeError, match="no batches"):
        MinibatchCKA().compute()


def test_layer_features_are_block_inputs_after_norm1_and_the_final_norm() -> None:
    vit = tiny_vit()
    x = torch.randn(4, 3, 16, 16)
    feats = layer_features(vit, x, drop_prefix=False)
    assert len(feats) == 3 and all(f.shape == (4, 17 * 32) for f in feats)
    with torch.no_grad():
        tokens = vit._pos_embed(vit.patch_embed(x))
        torch.testing.assert_close(feats[0], vit.blocks[0].norm1(tokens).flatten(1))
        torch.testing.assert_close(feats[1], vit.blocks[1].norm1(vit.blocks[0](tokens)).flatten(1))
        out = vit(x)
    torch.testing.assert_close(feats[2], torch.cat([out.cls[:, None], out.patches], 1).flatten(1))
    patches_only = layer_features(vit, x)
    assert all(f.shape == (4, 16 * 32) for f in patches_only)
    torch.testing.assert_close(patches_only[2], out.patches.flatten(1))


def test_layer_features_without_cls_token_use_the_token_norm() -> None:
    vit = tiny_vit(class_token=False)
    x = torch.randn(4, 3, 16, 16)
    feats = layer_features(vit, x)
    assert len(feats) == 3 and feats[-1].shape == (4, 16 * 32)
    tokens = feats[-1].reshape(4, 16, 32)
    torch.testing.assert_close(tokens.mean(-1), torch.zeros(4, 16), atol=1e-5, rtol=0)  # LayerNorm'd


def test_cka_matrix_of_a_vit_with_itself_has_a_unit_diagonal(tmp_path) -> None:
    vit = tiny_vit()
    batches = [(torch.randn(6, 3, 16, 16), torch.zeros(6)) for _ in range(2)]
    m = cka_matrix(vit, vit, batches)
    assert m.shape == (3, 3)
    torch.testing.assert_close(m.diagonal(), torch.ones(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(m, m.T, atol=1e-5, rtol=0)
    path = cka_heatmap(m, tmp_path / "cka.png", labels=("tiny", "tiny"))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("images, warned", [(8, True), (32, False)])
def test_fewer_images_than_the_feature_width_warn(images, warned, caplog, monkeypatch) -> None:
    from vitssl.engine.logging import log

    monkeypatch.setattr(log, "propagate", True)
    torch.manual_seed(0)
    cka_matrix(tiny_vit(), tiny_vit(), [torch.randn(images, 3, 16, 16)])
    messages = [r.getMessage() for r in caplog.records if "fewer than the feature width 32" in r.getMessage()]
    assert bool(messages) == warned
    if warned:
        assert messages[0].startswith(f"linear CKA from {images} images") and "--limit" in messages[0]
