import math

import pytest
import torch
from PIL import Image

from helpers import one_batch, tiny_method, tiny_overrides
from vitssl.augment.mae_transform import MAECropConfig, MAETransform, collate_images
from vitssl.augment.photometric import to_normalized_tensor
from vitssl.backbones.vit import sincos_pos_embed
from vitssl.commands.pretrain import pretrain
from vitssl.config import load_config, to_objects
from vitssl.data import build_dataset
from vitssl.engine.optim import decay_groups
from vitssl.engine.protocol import StepContext
from vitssl.heads import MAEDecoder, MAEDecoderConfig
from vitssl.losses import patchify, unpatchify
from vitssl.methods import MAEConfig, build_method, method_configs

CTX = StepContext(step=0, epoch=0, steps_per_epoch=1, total_steps=1, epochs=1)


def tiny_images(n=4, size=16):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(3))


# -- decoder ---------------------------------------------------------------------------------

def test_decoder_predicts_every_patch_with_or_without_cls():
    decoder = MAEDecoder(32, patch_size=4, grid=(4, 4), cfg=MAEDecoderConfig(depth=1, embed_dim=16, num_heads=2))
    ids_restore = torch.stack([torch.randperm(16) for _ in range(3)])
    visible = torch.randn(3, 4, 32)
    assert decoder(torch.randn(3, 32), visible, ids_restore, (4, 4)).shape == (3, 16, 4 * 4 * 3)
    assert decoder(None, visible, ids_restore, (4, 4)).shape == (3, 16, 48)
    ids_restore = torch.stack([torch.randperm(25) for _ in range(3)])
    assert decoder(torch.randn(3, 32), visible, ids_restore, (5, 5)).shape == (3, 25, 48)


def test_decoder_position_embedding_is_fixed_sincos_with_a_zero_cls_slot():
    decoder = MAEDecoder(32, 4, (4, 4), MAEDecoderConfig(depth=1, embed_dim=16, num_heads=2))
    assert not decoder.pos_embed.requires_grad
    assert torch.equal(decoder.pos_embed[0, 0], torch.zeros(16))
    assert torch.equal(decoder.pos_embed[0, 1:], sincos_pos_embed(16, (4, 4)))


# -- method ----------------------------------------------------------------------------------

def test_prediction_depends_on_visible_patches_only():
    method = tiny_method("mae").eval()
    images = tiny_images()
    pred, mask = method(images, torch.Generator().manual_seed(0))
    patches = patchify(images, 4)
    changed = torch.where(mask.unsqueeze(-1).bool(), patches + 5.0, patches)
    pred2, mask2 = method(unpatchify(changed, 4, (4, 4)), torch.Generator().manual_seed(0))
    assert torch.equal(mask, mask2)
    assert torch.allclose(pred, pred2, atol=1e-6)
    assert torch.equal(mask.sum(1), torch.full((4,), 12.0))  # 16 patches, floor(16 * 0.25) = 4 visible


def test_gradients_reach_encoder_and_decoder_but_not_the_fixed_positions():
    method = tiny_method("mae")
    out = method.training_step(one_batch(method), CTX)
    out.loss.backward()
    for name in ("encoder.patch_embed.proj.weight", "encoder.cls_token", "encoder.blocks.0.attn.qkv.weight",
                 "encoder.norm.weight", "decoder.embed.weight", "decoder.mask_token", "decoder.blocks.0.mlp.fc1.weight",
                 "decoder.pred.weight"):
        grad = method.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    trainable = dict(method.trainable_parameters())
    for name in ("encoder.pos_embed", "decoder.pos_embed"):
        assert name not in trainable and method.get_parameter(name).grad is None


def test_fixed_positions_stay_put_through_an_optimizer_step():
    method = tiny_method("mae")
    before = {n: method.get_parameter(n).clone() for n in ("encoder.pos_embed", "decoder.pos_embed")}
    opt = torch.optim.AdamW([p for _, p in method.trainable_parameters()], lr=1e-2, weight_decay=0.05)
    method.training_step(one_batch(method), CTX).loss.backward()
    opt.step()
    for name, value in before.items():
        assert torch.equal(method.get_parameter(name), value)
    assert torch.equal(before["encoder.pos_embed"][0, 0], torch.zeros(32))  # MAE: the CLS slot is zero


def test_mae_initialisation():
    method = tiny_method("mae")
    for name, module in method.named_modules():
        if isinstance(module, torch.nn.Linear):
            fan_out, fan_in = module.weight.shape
            assert module.weight.abs().max() <= math.sqrt(6 / (fan_in + fan_out)), name
            assert torch.equal(module.bias, torch.zeros_like(module.bias)), name
        elif isinstance(module, torch.nn.LayerNorm):
            assert torch.equal(module.weight, torch.ones_like(module.weight)), name
            assert torch.equal(module.bias, torch.zeros_like(module.bias)), name
    w = method.encoder.patch_embed.proj.weight  # (32, 3, 4, 4) viewed as a Linear 48 -> 32
    assert w.abs().max() <= math.sqrt(6 / (48 + 32)) and w.std() > 0.5 * math.sqrt(2 / (48 + 32))
    tokens = torch.cat([method.encoder.cls_token.flatten(), method.decoder.mask_token.flatten()])
    assert 0.01 < tokens.std() < 0.03


def test_weight_decay_groups_follow_mae():
    method = tiny_method("mae")
    decay, no_decay = decay_groups(method.trainable_parameters())
    names = {id(p): n for n, p in method.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    plain = {names[id(p)] for p in no_decay["params"]}
    assert {"encoder.cls_token", "decoder.mask_token", "decoder.pred.weight"} <= decayed  # MAE decays these
    assert {"decoder.pred.bias", "decoder.norm.weight", "encoder.norm.weight"} <= plain
    assert not {"encoder.pos_embed", "decoder.pos_embed"} & (decayed | plain)


def test_reconstruct_pastes_visible_patches_back_and_blanks_masked_ones():
    method = tiny_method("mae").eval()
    images = tiny_images()
    masked_input, reconstruction, loss = method.reconstruct(images, torch.Generator().manual_seed(0))
    _, mask = method(images, torch.Generator().manual_seed(0))
    assert masked_input.shape == reconstruction.shape == images.shape
    visible = (mask == 0).unsqueeze(-1)
    assert torch.equal(patchify(reconstruction, 4)[visible.expand(-1, -1, 48)], patchify(images, 4)[visible.expand(-1, -1, 48)])
    assert torch.equal(patchify(masked_input, 4)[~visible.expand(-1, -1, 48)], torch.zeros(4 * 12 * 48))
    pred, _ = method(images, torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(method.loss(pred, images, mask).item())


def test_config_rejects_a_mask_ratio_outside_0_1():
    with pytest.raises(ValueError, match="mask_ratio"):
        MAEConfig(mask_ratio=1.0)
    with pytest.raises(ValueError, match="crop.interpolation"):
        MAECropConfig(interpolation="nearest")


# -- data ------------------------------------------------------------------------------------

def test_transform_is_a_function_of_the_generator_seed_and_collates():
    transform = MAETransform(MAECropConfig(size=16, interpolation="random"))
    image = Image.fromarray((torch.rand(24, 20, 3, generator=torch.Generator().manual_seed(0)) * 255).byte().numpy())
    a = transform(image, torch.Generator().manual_seed(4))
    assert a.shape == (3, 16, 16)
    assert torch.equal(a, transform(image, torch.Generator().manual_seed(4)))
    assert not torch.equal(a, transform(image, torch.Generator().manual_seed(5)))
    images, labels = collate_images([(a, 1), (a, 2)])
    assert images.shape == (2, 3, 16, 16) and labels.tolist() == [1, 2]


def test_full_crop_with_certain_flip_mirrors_the_image():
    image = Image.fromarray((torch.rand(16, 16, 3, generator=torch.Generator().manual_seed(0)) * 255).byte().numpy())
    cfg = MAECropConfig(size=16, scale=[1.0, 1.0], ratio=[1.0, 1.0], flip_prob=1.0)
    out = MAETransform(cfg)(image, torch.Generator().manual_seed(0))
    assert torch.allclose(out, to_normalized_tensor(image).flip(-1), atol=1e-6)


# -- presets ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "preset, width, heads, decoder, scale, epochs",
    [
        ("mae_vit_base16", 768, 12, (8, 512, 16), [0.2, 1.0], 800),
        ("mae_lite_vit_tiny16", 192, 12, (1, 96, 3), [0.08, 1.0], 400),
        ("mae_lite_vit_small16", 384, 12, (1, 192, 6), [0.08, 1.0], 400),
    ],
)
def test_presets_follow_the_papers(preset, width, heads, decoder, scale, epochs):
    cfg = to_objects(load_config(preset, [], method_configs()))
    m = cfg.method
    assert (m.name, m.mask_ratio, m.norm_pix_loss) == ("mae", 0.75, True)
    assert (m.decoder.depth, m.decoder.embed_dim, m.decoder.num_heads) == decoder
    assert list(m.crop.scale) == scale and cfg.train.epochs == epochs
    o = cfg.optim
    assert (o.optimizer, list(o.betas), o.lr, o.min_lr, o.warmup_epochs) == ("adamw", [0.9, 0.95], 1.5e-4, 0.0, 40)
    assert o.weight_decay == o.weight_decay_end == 0.05 and o.clip_mode == "none"
    method = build_method(m, cfg.backbone)
    assert method.encoder.embed_dim == width and method.encoder.blocks[0].attn.num_heads == heads


@pytest.mark.parametrize("preset", ["mae_vit_base16", "mae_lite_vit_tiny16", "mae_lite_vit_small16", "demo_mae_mnist"])
def test_preset_trains_two_tiny_steps(preset, tmp_path):
    trainer = pretrain(load_config(preset, tiny_overrides("digits", preset=preset), method_configs()), tmp_path / "run")
    assert trainer.step == 2


def test_mae_lite_tiny_encoder_has_the_papers_size():
    cfg = to_objects(load_config("mae_lite_vit_tiny16", [], method_configs()))
    method = build_method(cfg.method, cfg.backbone)
    encoder = sum(p.numel() for n, p in method.trainable_parameters() if n.startswith("encoder."))
    assert encoder + 192 * 1000 + 1000 == pytest.approx(5.7e6, rel=0.01)  # 5.7M with a 1000-way classifier


# -- learning --------------------------------------------------------------------------------

FAST_DEMO = ["backbone.embed_dim=64", "backbone.depth=2", "backbone.num_heads=2", "method.decoder.depth=1",
             "method.decoder.embed_dim=64", "method.decoder.num_heads=2", "train.batch_size=32", "train.epochs=1",
             "train.max_steps_per_epoch=60", "train.num_workers=0", "optim.warmup_epochs=0", "train.progress=false",
             "train.tensorboard=false", "train.device=cpu", "train.precision=fp32"]


def held_out_losses(method, n=500):
    """Masked-patch MSE on the first n MNIST validation images with one fixed mask, for the
    model and for predicting zeros (the data-set mean after normalisation) everywhere."""
    c = method.cfg.crop
    val = build_dataset("mnist", "val")
    images = torch.stack([to_normalized_tensor(val[i][0], c.mean, c.std) for i in range(n)])
    method.eval()
    with torch.no_grad():
        pred, mask = method(images, torch.Generator().manual_seed(123))
        return method.loss(pred, images, mask).item(), method.loss(torch.zeros_like(pred), images, mask).item()


def test_sixty_steps_lower_held_out_reconstruction_loss(tmp_path):
    cfg = load_config("demo_mae_mnist", FAST_DEMO, method_configs())
    torch.manual_seed(0)
    objs = to_objects(cfg)
    random_init, mean_baseline = held_out_losses(build_method(objs.method, objs.backbone))
    trainer = pretrain(cfg, tmp_path / "run")  # seeds like the CLI, so the same initial network
    assert trainer.step == 60
    trained, _ = held_out_losses(trainer.method)
    # measured: random init 2.16, predicting the mean 1.01, after 60 steps 0.85
    assert trained < 0.5 * random_init
    assert trained < 0.92 * mean_baseline


def test_device_crop_is_the_image_or_its_mirror_at_full_scale_with_the_flip_rate():
    from vitssl.augment.mae_transform import MAECropConfig, MAEDeviceCrop

    cfg = MAECropConfig(size=12, scale=[1.0, 1.0], ratio=[1.0, 1.0], mean=[0.0] * 3, std=[1.0] * 3)
    image = (torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(0)) * 255).round().to(torch.uint8)
    out = MAEDeviceCrop(cfg)([image] * 400, torch.Generator().manual_seed(1))
    plain, mirror = image.float() / 255, image.float().flip(-1) / 255
    is_plain = (out - plain).abs().amax(dim=(1, 2, 3)) < 1e-5
    is_mirror = (out - mirror).abs().amax(dim=(1, 2, 3)) < 1e-5
    assert bool((is_plain | is_mirror).all())  # a full-image box resamples to the image exactly
    assert 0.4 < is_mirror.float().mean().item() < 0.6  # flip_prob 0.5 (binomial sd 0.025)


def test_device_crop_normalises_and_matches_the_cpu_crop_area_statistics():
    from vitssl.augment.mae_transform import MAECropConfig, MAEDeviceCrop, MAETransform

    cfg = MAECropConfig(size=8, scale=[0.2, 1.0], mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.5])
    grey = torch.full((3, 40, 40), 153, dtype=torch.uint8)  # 0.6 everywhere
    out = MAEDeviceCrop(cfg)([grey] * 4, torch.Generator().manual_seed(0))
    expected = (0.6 - torch.tensor(cfg.mean)) / torch.tensor(cfg.std)
    torch.testing.assert_close(out, expected.reshape(1, 3, 1, 1).expand_as(out), atol=1e-5, rtol=0)
    # crop areas: a half-black, half-white image; the white share of a view follows the box
    # distribution, so its mean and spread match the CPU transform's over many draws
    from PIL import Image

    half = torch.zeros(3, 40, 40, dtype=torch.uint8)
    half[:, :, 20:] = 255
    ident = MAECropConfig(size=8, scale=[0.2, 1.0], mean=[0.0] * 3, std=[1.0] * 3)
    dev = MAEDeviceCrop(ident)([half] * 2000, torch.Generator().manual_seed(2)).mean(dim=(1, 2, 3))
    pil = Image.fromarray(half.permute(1, 2, 0).numpy())
    cpu_t, g = MAETransform(ident), torch.Generator().manual_seed(3)
    cpu = torch.stack([cpu_t(pil, g).mean() for _ in range(2000)])
    assert abs(dev.mean() - cpu.mean()) < 0.03 and abs(dev.std() - cpu.std()) < 0.03


def test_forward_with_keep_is_forward_plus_the_visible_patches_it_encoded():
    """The one masked forward D-MAE-Lite reuses: `ids_keep` are exactly the unmasked patches."""
    method = tiny_method("mae").eval()
    images, _ = one_batch(method)
    pred, mask = method(images, torch.Generator().manual_seed(3))
    pred_k, mask_k, ids_keep = method.forward_with_keep(images, torch.Generator().manual_seed(3))
    assert torch.equal(pred, pred_k) and torch.equal(mask, mask_k)
    visible = torch.zeros_like(mask).scatter_(1, ids_keep, 1.0)
    assert torch.equal(visible, 1 - mask)
