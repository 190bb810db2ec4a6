"""`vitssl benchmark input`: how many images per second the training input pipeline delivers
with no model behind it, so a user sees whether data or the model limits a run.

Each row builds the loader a pre-training run builds (`build_train_loader`: the image folder's
sampler or the shard stream) with device-side augmentation's worker transform (decode to uint8,
no augmentation), and times `--batches` batches after one warm-up batch (worker start-up and the
first shard open are not counted). With `--decode device` the workers only read JPEG bytes and
the batch is decoded in the main process on `--device`, as `train.decode_on=device` does; with
`--decode none` nothing decodes them (what the host alone does under `decode_on=device`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from vitssl.augment.device_input import collate_decoded, decoded_uint8
from vitssl.data import build_dataset, folder_dataset
from vitssl.data.device_decode import DeviceJPEGDecoder
from vitssl.data.loaders import AugmentedDataset, build_train_loader


@dataclass
class InputRow:
    data: str
    kind: str  # folder | shards | built-in
    workers: int
    decode: str
    images: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / max(self.seconds, 1e-9)

    def as_dict(self) -> dict:
        return {**asdict(self), "images_per_s": round(self.images_per_s, 1)}


def measure(source: str, workers: int, decode: str, batch_size: int, batches: int, device: torch.device) -> InputRow:
    """Time `batches` batches of the input pipeline for one (data, workers, decode) setting."""
    data = build_dataset(source, split="train")
    base = folder_dataset(data)
    kind = "built-in" if base is None else type(base).__name__.replace("ImageFolderDataset", "folder").replace(
        "ShardDataset", "shards")
    if base is not None:
        base.keep_jpeg_encoded = decode in ("device", "none")
    per_epoch = len(data) // batch_size
    if per_epoch < 2:
        raise ValueError(f"'{source}' holds {len(data)} images, fewer than two batches of {batch_size}: "
                         "lower --batch-size")
    decoder = DeviceJPEGDecoder(device) if decode == "device" else None
    loader = build_train_loader(AugmentedDataset(data, decoded_uint8, 0), collate_decoded, batch_size, workers, 0)
    images, seconds, epoch, done = 0, 0.0, 0, -1
    try:
        while done < batches:
            loader.batch_sampler.set_epoch(epoch)
            tick = time.perf_counter()
            for batch, _labels in loader:
                if decoder is not None:
                    batch = decoder(batch)
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                now = time.perf_counter()
                if done >= 0:  # the first batch warms up (worker start-up, first shard open)
                    images, seconds = images + batch_size, seconds + (now - tick)
                done += 1
                tick = now
                if done >= batches:
                    break
            epoch += 1
    finally:
        loader.close()
    return InputRow(source, kind, workers, decode, images, seconds)


def format_input_table(rows: list[InputRow]) -> str:
    width = max(len("data"), *(len(r.data) for r in rows))
    lines = [f"{'data':<{width}}  {'kind':<8} {'workers':>7} {'decode':<6} {'images/s':>9}"]
    lines += [f"{r.data:<{width}}  {r.kind:<8} {r.workers:>7} {r.decode:<6} {r.images_per_s:>9.1f}" for r in rows]
    return "\n".join(lines)


def run_input_benchmark(args) -> list[InputRow]:
    """Every (data, decode, workers) combination of the command's arguments, printed as a table."""
    from vitssl.engine.device import resolve_device

    for name, value, low in (("--batch-size", args.batch_size, 1), ("--batches", args.batches, 1)):
        if value < low:
            raise ValueError(f"{name} {value}: pass {low} or more")
    if any(w < 0 for w in args.workers):
        raise ValueError(f"--workers {' '.join(map(str, args.workers))}: worker counts are 0 or more")
    device = resolve_device(args.device)
    rows = [measure(source, workers, decode, args.batch_size, args.batches, device)
            for source in args.data for decode in args.decode for workers in args.workers]
    print(format_input_table(rows))
    if args.json:
        from vitssl.engine.outputs import save_results

        save_results({"input": [r.as_dict() for r in rows]}, args.json)
    return rows
