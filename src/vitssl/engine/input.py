"""What the trainer needs from its input: batches of an epoch, made ready for a step on the device.

`vitssl.data.pipeline.InputPipeline` implements it (data set, sampler, loader, host or device
decoding, device augmentation); the caller builds one and hands it to the `Trainer`, so the
engine imports neither `data/` nor `augment/`.
"""

from __future__ import annotations

from typing import Any, Iterator, Protocol

import torch


class TrainingInput(Protocol):
    """Micro-batches of one run, in an order that is a function of (seed, epoch, position)."""

    device: torch.device
    accum_steps: int  # micro-batches per optimizer step
    steps_per_epoch: int  # optimizer steps per epoch on this rank

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """The epoch the next iteration yields, starting at micro-batch `start_step * accum_steps`."""
        ...

    def __iter__(self) -> Iterator[Any]:
        """The set epoch's remaining micro-batches, as the loader gives them (host memory)."""
        ...

    def to_device(self, batch: Any, step: int, micro: int) -> Any:
        """A micro-batch on the device, ready for `training_step`; random draws made here are
        seeded by (seed, step, rank, micro), so a resumed run draws the same."""
        ...

    def metrics(self) -> dict[str, float]:
        """Counters to log with each step (e.g. images the decoder had to replace)."""
        ...

    def close(self) -> None:
        """End loader workers (the pipeline may be iterated again afterwards)."""
        ...
