"""Frozen-feature extraction for DINO's k-NN and linear protocols (DINO paper Sec. 3.2; facebookresearch/dino eval_knn.py, eval_linear.py)."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from vitssl.backbones import create_backbone
from vitssl.eval import extract_features

D = 32


def tiny(depth: int = 4, drop_path_rate: float = 0.1):
    # drop-path on: features are only deterministic if extraction runs in eval mode
    return create_backbone("vit_tiny", patch_size=4, img_size=16, embed_dim=D, depth=depth, num_heads=2,
                           drop_path_rate=drop_path_rate)


def loader(n: int = 10):
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(n, 3, 16, 16, generator=g), torch.randperm(n, generator=g) * 3
    return DataLoader(TensorDataset(images, labels), batch_size=4), labels


def test_shapes_dtype_and_labels_in_order():
    model, (data, labels) = tiny(), loader()
    f1, y = extract_features(model, data, "cpu")
    assert f1.shape == (10, D) and f1.dtype == torch.float32 and f1.device.type == "cpu"
    assert y.dtype == torch.int64 and torch.equal(y, labels)
    f4, _ = extract_features(model, data, "cpu", n_last_blocks=4)  # DINO ViT-S: 4 CLS tokens
    f_avg, _ = extract_features(model, data, "cpu", avgpool_patchtokens=True)  # DINO ViT-B: CLS + mean patch
    f2_avg, _ = extract_features(model, data, "cpu", n_last_blocks=2, avgpool_patchtokens=True)
    assert f4.shape == (10, 4 * D) and f_avg.shape == (10, 2 * D) and f2_avg.shape == (10, 3 * D)
    # the last block through the final norm is the model's own output
    assert torch.allclose(f4[:, -D:], f1, atol=1e-5) and torch.allclose(f_avg[:, :D], f1, atol=1e-5)


def test_mean_patch_token_part():
    model, (data, _) = tiny(), loader()
    f_avg, _ = extract_features(model, data, "cpu", avgpool_patchtokens=True)
    images = torch.cat([x for x, _ in data])
    with torch.no_grad():
        expected = model.eval()(images).patches.mean(dim=1)
    assert torch.allclose(f_avg[:, D:], expected, atol=1e-5)


@pytest.mark.parametrize("training", [True, False])
def test_eval_mode_during_extraction_and_flag_restored(training):
    model, (data, _) = tiny(), loader()
    model.train(training)
    a, _ = extract_features(model, data, "cpu")
    b, _ = extract_features(model, data, "cpu")
    assert torch.equal(a, b)  # drop-path would make train-mode features random
    assert model.training is training and all(m.training is training for m in model.modules())


def test_flag_restored_on_error():
    model = tiny().train()

    def broken():
        yield torch.randn(2, 3, 16, 16), torch.zeros(2)
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        extract_features(model, broken(), "cpu")
    assert model.training


def test_errors():
    model, (data, _) = tiny(depth=2), loader()
    with pytest.raises(ValueError, match="n_last_blocks=4 but the backbone returned 2"):
        extract_features(model, data, "cpu", n_last_blocks=4)
    with pytest.raises(ValueError, match="n_last_blocks must be >= 1"):
        extract_features(model, data, "cpu", n_last_blocks=0)
    with pytest.raises(ValueError, match="no batches"):
        extract_features(model, [], "cpu")


@pytest.mark.parametrize("num_workers", [0, 1])
def test_labelled_features_leave_the_global_generator_alone(num_workers):
    """An evaluation between training steps (online k-NN, a demo's random-init row) must not
    change what the run draws next: each DataLoader iterator would otherwise take its base seed
    from torch's global generator."""
    from vitssl.eval.features import labelled_features

    model = tiny(depth=1)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    feats, labels, classes = labelled_features(model, "digits", "val", 16, torch.device("cpu"),
                                               batch_size=128, num_workers=num_workers)
    assert torch.equal(torch.rand(3), expected)
    assert feats.shape == (len(labels), D) and classes == 10
