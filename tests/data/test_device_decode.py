"""`train.decode_on=device`: workers read JPEG bytes, the step decodes the batch on the device.

On CPU the device is the host, so the same code path (batched `decode_jpeg(..., device=...)`)
runs here; on CUDA it is nvJPEG.
"""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import tiny_overrides
from vitssl.commands.pretrain import pretrain
from vitssl.config import load_config, to_objects
from vitssl.data import ImageFolderDataset, build_dataset
from vitssl.data.device_decode import DeviceJPEGDecoder, EncodedJPEG
from vitssl.data.pipeline import InputPipeline
from vitssl.engine.trainer import Trainer
from vitssl.methods import build_method, method_configs


def photo(seed, h=40, w=56):
    """Smooth colour gradients with noise: JPEG-like content (not flat, not pure noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    pixels = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h) + 64], -1)
    return np.clip(pixels + rng.normal(0, 12, pixels.shape), 0, 255).astype(np.uint8)


def jpeg_folder(root, n=12):
    """Class folders of RGB JPEGs, one grey JPEG, one CMYK JPEG and one PNG."""
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(n // 2):
            Image.fromarray(photo(i + 10 * (c == "b"))).save(root / c / f"{i}.jpg", quality=90)
    Image.fromarray(photo(99)).convert("L").save(root / "a" / "grey.jpg")
    Image.fromarray(photo(98)).convert("CMYK").save(root / "b" / "cmyk.jpg")
    Image.fromarray(photo(97)).save(root / "b" / "lossless.png")
    return root


def pil_decode(path):
    with Image.open(path) as img:
        return torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)


def test_workers_keep_rgb_and_grey_jpegs_encoded_and_decode_the_rest(tmp_path):
    data = ImageFolderDataset(jpeg_folder(tmp_path / "d"))
    data.keep_jpeg_encoded = True
    kinds = {}
    for i, (path, _) in enumerate(data.samples):
        item, _ = data[i]
        kinds[path.rsplit("/", 1)[1]] = "encoded" if isinstance(item, EncodedJPEG) else item.mode
    assert kinds["grey.jpg"] == kinds["0.jpg"] == "encoded"
    assert kinds["cmyk.jpg"] == kinds["lossless.png"] == "RGB"  # decoded by the worker, as before


def test_batched_decode_matches_pil_and_keeps_order(tmp_path):
    data = ImageFolderDataset(jpeg_folder(tmp_path / "d"))
    data.keep_jpeg_encoded = True
    items = [data[i][0] for i in range(len(data))]
    mixed = [x if isinstance(x, EncodedJPEG) else torch.from_numpy(np.array(x)).permute(2, 0, 1) for x in items]
    decoder = DeviceJPEGDecoder(torch.device("cpu"))
    out = decoder(mixed)
    assert len(out) == len(items) and decoder.host_fallbacks == decoder.replaced == 0
    for (path, _), image in zip(data.samples, out):
        expected = pil_decode(path)
        assert image.dtype == torch.uint8 and image.shape == expected.shape, path
        # the same libjpeg family decodes both; allow an IDCT rounding difference
        assert (image.int() - expected.int()).abs().max() <= 2, path


def test_a_truncated_jpeg_is_skipped_by_the_worker_like_under_pil(tmp_path):
    root = jpeg_folder(tmp_path / "d")
    whole = (root / "a" / "0.jpg").read_bytes()
    (root / "a" / "0.jpg").write_bytes(whole[: len(whole) // 2])
    data = ImageFolderDataset(root)
    data.keep_jpeg_encoded = True
    index = [p for p, _ in data.samples].index(str(root / "a" / "0.jpg"))
    with pytest.warns(UserWarning, match="truncated"):
        item, _ = data[index]
    assert isinstance(item, EncodedJPEG) and item.path != str(root / "a" / "0.jpg")  # a substitute
    assert data.skip_report().by_reason() == {"truncated": 1}


def test_device_rejects_fall_back_to_the_host_then_to_another_image(tmp_path, monkeypatch):
    good = io.BytesIO()
    Image.fromarray(photo(1)).save(good, format="JPEG")
    encoded = EncodedJPEG(torch.frombuffer(bytearray(good.getvalue()), dtype=torch.uint8), "good.jpg")
    junk = EncodedJPEG(torch.frombuffer(bytearray(b"\xff\xd8" + b"\x00" * 64 + b"\xff\xd9"), dtype=torch.uint8),
                       "junk.jpg")
    decoder = DeviceJPEGDecoder(torch.device("cpu"))
    out = decoder([junk, encoded])
    assert decoder.replaced == 1 and torch.equal(out[0], out[1])  # junk replaced by the good image
    import vitssl.data.device_decode

    def device_decoder_rejects_everything(*args, **kwargs):
        raise RuntimeError("nvjpeg: unsupported")

    monkeypatch.setattr(vitssl.data.device_decode, "decode_jpeg", device_decoder_rejects_everything)
    host = DeviceJPEGDecoder(torch.device("cpu"))
    (image,) = host([encoded])
    assert host.host_fallbacks == 1 and host.replaced == 0
    assert torch.equal(image, torch.from_numpy(np.array(Image.open(good))).permute(2, 0, 1))
    with pytest.raises(RuntimeError, match="no image of the batch could be decoded"):
        host([junk])


def trainer_for(tmp_path, root, *extra):
    cfg = load_config(None, [*tiny_overrides(str(root)), "train.augment_on=device", *extra], method_configs())
    objs = to_objects(cfg)
    torch.manual_seed(0)
    method = build_method(objs.method, objs.backbone)
    return Trainer(method, InputPipeline(method, build_dataset(str(root)), objs.train), objs.train, objs.optim, tmp_path)


def test_device_decoding_gives_the_views_host_decoding_gives(tmp_path):
    root = jpeg_folder(tmp_path / "d", n=16)
    host = trainer_for(tmp_path / "host", root)
    dev = trainer_for(tmp_path / "dev", root, "train.decode_on=device")
    raw = next(dev._batches(0, 0))
    assert any(isinstance(x, EncodedJPEG) for x in raw[0].unpack())  # the workers did not decode these
    dev_views, dev_labels = dev._prepare(raw, 0)
    host_views, host_labels = host._prepare(next(host._batches(0, 0)), 0)
    assert torch.equal(dev_labels, host_labels)
    for a, b in zip(dev_views, host_views):
        assert a.shape == b.shape
        assert (a - b).abs().max() < 0.1  # normalised pixels; decoders differ by IDCT rounding only
    with torch.no_grad():
        dev_loss = dev.method.training_step((dev_views, dev_labels), dev._context()).loss
        host_loss = host.method.training_step((host_views, host_labels), host._context()).loss
    torch.testing.assert_close(dev_loss, host_loss, rtol=1e-3, atol=1e-3)


def test_a_run_with_device_decoding_trains_and_logs_its_counters(tmp_path):
    root = jpeg_folder(tmp_path / "d", n=16)
    cfg = load_config(None, [*tiny_overrides(str(root)), "train.augment_on=device", "train.decode_on=device"],
                      method_configs())
    trainer = pretrain(cfg, tmp_path / "run")
    assert trainer.step == 2
    rows = [line for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if "loss" in line]
    assert '"decode_host_fallbacks": 0' in rows[-1] and '"decode_replaced": 0' in rows[-1]


@pytest.mark.parametrize("extra, message", [
    (["train.decode_on=device"], "needs train.augment_on=device"),
    (["train.augment_on=device", "train.decode_on=gpu"], "train.decode_on='gpu' is not a choice"),
])
def test_bad_decode_settings_are_refused_with_the_fix(tmp_path, extra, message):
    with pytest.raises(ValueError, match=message):  # when the config is loaded, before any run
        load_config(None, [*tiny_overrides("digits"), *extra], method_configs())


def test_a_batch_of_jpegs_leaves_a_worker_as_one_tensor_and_decodes_the_same(tmp_path):
    """Workers pack the batch's JPEG bytes: one shared-memory hand-over per batch, not per image."""
    from torch.utils.data import DataLoader

    from vitssl.augment.device_input import collate_decoded, decoded_uint8
    from vitssl.data.device_decode import PackedBatch
    from vitssl.data.loaders import AugmentedDataset

    folder = ImageFolderDataset(jpeg_folder(tmp_path / "d"))
    folder.keep_jpeg_encoded = True
    data = AugmentedDataset(folder, decoded_uint8, seed=0)
    loader = DataLoader(data, batch_sampler=[[(0, i) for i in range(len(data))]], num_workers=1,
                        collate_fn=collate_decoded)
    images, labels = next(iter(loader))
    assert isinstance(images, PackedBatch) and len(labels) == len(data) == 15
    host_decoded = [x for x in images.images if x is not None]
    assert sum(x is None for x in images.images) == len(images.ends) == 13  # 12 RGB JPEGs and the grey one
    assert len(host_decoded) == 2  # CMYK and PNG: decoded by the worker, as before
    out = DeviceJPEGDecoder(torch.device("cpu"))(images)
    for (path, _), image in zip(folder.samples, out):
        assert (image.int() - pil_decode(path).int()).abs().max() <= 2, path
