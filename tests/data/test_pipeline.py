"""`InputPipeline`: the run's batches as the trainer consumes them, built outside the trainer."""

import io

import pytest
import torch
from PIL import Image

from vitssl.data.device_decode import EncodedJPEG, PackedBatch
from vitssl.data.pipeline import InputPipeline
from vitssl.engine.optim import OptimConfig
from vitssl.engine.train_config import TrainConfig
from vitssl.engine.trainer import Trainer


class Noisy:
    """A method's data side: each image plus one seeded draw; batches stacked."""

    def train_transform(self):
        return lambda x, g: x + torch.rand(1, generator=g)

    def collate(self, samples):
        return torch.stack([x for x, _ in samples]), torch.tensor([y for _, y in samples])


def train(**kw):
    return TrainConfig(**{"batch_size": 4, "num_workers": 0, "device": "cpu", "seed": 3, **kw})


NUMBERS = [(torch.tensor([float(i)]), i) for i in range(40)]


def test_a_resumed_epoch_yields_the_rest_of_the_same_micro_batches():
    data = InputPipeline(Noisy(), NUMBERS, train(accum_steps=2, max_steps_per_epoch=3))
    assert data.steps_per_epoch == 3
    data.set_epoch(1)
    whole = list(data)
    assert len(whole) == 6 and len({int(y) for _, labels in whole for y in labels}) == 24  # no image twice
    data.set_epoch(1, start_step=2)  # after 2 optimizer steps = 4 micro-batches
    rest = list(data)
    assert len(rest) == 2
    for (a, la), (b, lb) in zip(rest, whole[4:]):
        assert torch.equal(a, b) and torch.equal(la, lb)
    data.set_epoch(2)
    assert not torch.equal(next(iter(data))[1], whole[0][1])  # another epoch, another order
    data.close()


def test_too_few_images_for_one_step_are_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"^the data set has 7 images, fewer than one step of 8: lower "
                                         r"train.batch_size or add images$"):
        InputPipeline(Noisy(), NUMBERS[:7], train(accum_steps=2))


def test_the_trainer_refuses_a_pipeline_built_from_another_train_config(tmp_path):
    data = InputPipeline(Noisy(), NUMBERS, train(accum_steps=2))
    with pytest.raises(ValueError, match="gives 2 micro-batches a step on cpu, the trainer takes 1 on cpu"):
        Trainer(torch.nn.Linear(1, 1), data, train(), OptimConfig(), tmp_path)


class JPEGs(torch.utils.data.Dataset):
    """Image i is (20 + i) pixels wide: a PIL image, or its JPEG bytes once `keep_jpeg_encoded`
    is set (as an image folder does); its label is i."""

    def __init__(self, n=8):
        self.files = []
        for i in range(n):
            out = io.BytesIO()
            Image.new("RGB", (20 + i, 16), (20 * i, 100, 50)).save(out, "JPEG")
            self.files.append(out.getvalue())
        self.keep_jpeg_encoded = False

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        if self.keep_jpeg_encoded:
            return EncodedJPEG(torch.frombuffer(bytearray(self.files[i]), dtype=torch.uint8), f"{i}.jpg"), i
        return Image.open(io.BytesIO(self.files[i])), i


class Wrapped(torch.utils.data.Dataset):
    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        return self.base[i]


class Widths:
    """Device augmentation that reports each decoded image's width."""

    def device_transform(self):
        return lambda images, generator: torch.tensor([img.shape[-1] for img in images])


@pytest.mark.parametrize("decode_on", ["cpu", "device"])
def test_device_decoding_hands_over_jpeg_bytes_and_the_step_decodes_them(decode_on):
    jpegs = JPEGs()
    data = InputPipeline(Widths(), Wrapped(jpegs), train(augment_on="device", decode_on=decode_on))
    assert jpegs.keep_jpeg_encoded == (decode_on == "device")  # found under the wrapper
    data.set_epoch(0)
    images, labels = next(iter(data))
    assert isinstance(images, PackedBatch) == (decode_on == "device")
    widths, same_labels = data.to_device((images, labels), step=0, micro=0)
    assert widths.tolist() == [20 + i for i in labels.tolist()] and torch.equal(same_labels, labels)
    assert data.metrics() == ({"decode_host_fallbacks": 0, "decode_replaced": 0} if decode_on == "device" else {})
