"""The training input pipeline: a data set in, micro-batches ready for a method's step out.

Built by whoever runs training (`vitssl pretrain`, the step benchmark, a library user) and
handed to the `Trainer`, which runs any `TrainingInput` (engine/input.py) and knows nothing of
data sets, decoders or augmentation. Two ways to augment (`train.augment_on`):

- `cpu`: loader workers run the method's `train_transform()` per image and its `collate`;
- `device`: workers only decode (uint8 tensors, `augment/device_input.py`) and the method's
  `device_transform()` augments each micro-batch on the device. With `train.decode_on=device`
  the workers do not even decode JPEGs: a data set that can (`keep_jpeg_encoded`, e.g. an image
  folder) hands over their bytes and the step decodes the batch at once (nvJPEG on CUDA).

Every random draw is a function of the seed and the position in the run (data/loaders.py), so
a run resumed mid-epoch sees exactly the batches and views it would have seen.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import torch
from torch.utils.data import Dataset

from vitssl.augment.device_input import collate_decoded, decoded_uint8
from vitssl.data.device_decode import DeviceJPEGDecoder
from vitssl.data.loaders import (
    AugmentedDataset,
    EpochBatchSampler,
    StopSignalSafeLoader,
    build_train_loader,
    sample_seed,
)
from vitssl.distributed import rank, world_size
from vitssl.engine.cores import default_num_workers
from vitssl.engine.device import resolve_device
from vitssl.engine.protocol import optional_member
from vitssl.engine.train_config import TrainConfig


class InputPipeline:
    """A run's micro-batches: `set_epoch(epoch, start_step)`, iterate, `to_device(batch, step, micro)`.

    `method` gives `train_transform()` and `collate` (or `device_transform()`); `train` the
    batch size, accumulation, workers, seed, epoch length and where to augment and decode;
    `device` defaults to `train.device` resolved as the trainer resolves it.
    """

    def __init__(self, method: Any, dataset: Dataset, train: TrainConfig,
                 device: torch.device | str | None = None) -> None:
        self.device = resolve_device(train.device) if device is None else torch.device(device)
        self.batch_size, self.accum_steps = train.batch_size, train.accum_steps
        # None: by the cores this process may use, decided on each machine (the saved config keeps None)
        self.num_workers = default_num_workers() if train.num_workers is None else train.num_workers
        self.seed = train.seed
        transform, self.collate, self.augment = augmentation(method, train.augment_on)
        self.decode = device_decoder(dataset, train, self.device)
        self.dataset = AugmentedDataset(dataset, transform, train.seed)
        batches = EpochBatchSampler(len(self.dataset), train.batch_size, train.seed,
                                    max_batches=train.max_steps_per_epoch * train.accum_steps).num_batches()
        self.steps_per_epoch = batches // train.accum_steps
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"the data set has {len(self.dataset)} images, fewer than one step of "
                f"{train.batch_size * train.accum_steps * world_size()}: lower train.batch_size or add images"
            )
        self._loader: StopSignalSafeLoader | None = None
        self._epoch, self._start_step = 0, 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self._epoch, self._start_step = epoch, start_step

    def __iter__(self) -> Iterator[Any]:
        """The set epoch's micro-batches from `start_step`; one loader (persistent workers) per run."""
        if self._loader is None:
            self._loader = build_train_loader(
                self.dataset, self.collate, self.batch_size, self.num_workers, self.seed,
                max_batches=self.steps_per_epoch * self.accum_steps, pin_memory=self.device.type == "cuda",
            )
        self._loader.batch_sampler.set_epoch(self._epoch, self._start_step * self.accum_steps)
        return iter(self._loader)

    def to_device(self, batch: Any, step: int, micro: int) -> Any:
        """Move a micro-batch to the device; with device-side augmentation, augment it there.

        The augmentation generator is seeded by (seed, step, rank, micro-batch), so a resumed
        run draws the same views.
        """
        batch = move_to(batch, self.device)
        if self.augment is None:
            return batch
        images, labels = batch
        if self.decode is not None:
            images = self.decode(images)
        seed = sample_seed(self.seed, step, rank() * self.accum_steps + micro)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        with torch.no_grad():
            return self.augment(images, generator), labels

    def metrics(self) -> dict[str, float]:
        """The device decoder's counters (none without one)."""
        if self.decode is None:
            return {}
        return {"decode_host_fallbacks": self.decode.host_fallbacks, "decode_replaced": self.decode.replaced}

    def close(self) -> None:
        """End the loader's workers; a later iteration starts new ones."""
        if self._loader is not None:
            self._loader.close()
            self._loader = None


def augmentation(method: Any, augment_on: str) -> tuple[Callable, Callable, Callable | None]:
    """(per-sample transform, collate, batch augmentation on the device or None)."""
    if augment_on == "cpu":
        return method.train_transform(), method.collate, None
    if augment_on != "device":
        raise ValueError(f"unknown train.augment_on '{augment_on}': choose cpu or device")
    make = optional_member(method, "device_transform")
    augment = make() if make is not None else None
    if augment is None:
        raise ValueError(f"{type(method).__name__} has no device-side augmentation: use train.augment_on=cpu")
    return decoded_uint8, collate_decoded, augment


def device_decoder(dataset: Dataset, train: TrainConfig, device: torch.device) -> DeviceJPEGDecoder | None:
    """With `decode_on=device`, a data set that can keeps its JPEGs encoded for the step to decode."""
    if train.decode_on == "cpu":
        return None
    if train.decode_on != "device":
        raise ValueError(f"unknown train.decode_on '{train.decode_on}': choose cpu or device")
    if train.augment_on != "device":
        raise ValueError("train.decode_on=device needs train.augment_on=device (the workers then only read bytes)")
    source = jpeg_source(dataset)
    if source is not None:
        source.keep_jpeg_encoded = True
    return DeviceJPEGDecoder(device)


def jpeg_source(dataset: Any) -> Any | None:
    """The data set under wrappers (kept as `.base`) that can hand over JPEG bytes undecoded."""
    for _ in range(8):
        if dataset is None or hasattr(dataset, "keep_jpeg_encoded"):
            return dataset
        dataset = getattr(dataset, "base", None)
    return None


def move_to(batch: Any, device: torch.device) -> Any:
    """Tensors in (nested) lists, tuples and dicts onto `device`; anything else as it is."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    return batch
