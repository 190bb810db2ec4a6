"""JPEG decoding on the accelerator (`train.decode_on=device`, with `train.augment_on=device`).

A GPU step of a small model consumes more images per second than a few CPU cores can decode
(MAE-Lite ViT-Tiny: over 5,000/s). With this mode the DataLoader workers only read a JPEG's
bytes and check its header (size limit, end-of-image marker); the whole micro-batch is then
decoded in one `torchvision.io.decode_jpeg(..., device=...)` call (nvJPEG on CUDA) inside the
step. Non-JPEG files (PNG, WebP, in-memory built-in sets) are decoded by the workers as before.

A JPEG the device decoder rejects (CMYK, progressive corner cases, corruption past the header)
is decoded on the host with PIL from the same bytes; if that fails too it is replaced by the
batch's first decodable image and counted, so one bad file cannot end a long run.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass

import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

log = logging.getLogger("vitssl")

JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"


@dataclass
class EncodedJPEG:
    """A JPEG file's bytes, header-checked, not yet decoded."""

    data: torch.Tensor  # uint8 (n,)
    path: str


@dataclass
class PackedBatch:
    """A micro-batch whose JPEGs travel from a loader worker as one byte tensor.

    Each tensor a worker returns is handed to the main process as its own shared-memory
    segment (a file descriptor passed per tensor), which costs far more than the few bytes it
    moves; packing the batch's JPEG bytes into one tensor pays that once per batch. `images`
    holds the batch's other (host-decoded) images at their positions, None where a JPEG goes.
    """

    data: torch.Tensor  # uint8 (total,): the JPEGs back to back
    ends: list[int]  # end offset of each JPEG in `data`
    paths: list[str]
    images: list[torch.Tensor | None]

    @classmethod
    def pack(cls, items: list[torch.Tensor | EncodedJPEG]) -> PackedBatch:
        jpegs = [x for x in items if isinstance(x, EncodedJPEG)]
        data = torch.cat([x.data for x in jpegs]) if jpegs else torch.empty(0, dtype=torch.uint8)
        ends = torch.tensor([x.data.numel() for x in jpegs], dtype=torch.long).cumsum(0).tolist()
        return cls(data, ends, [x.path for x in jpegs], [None if isinstance(x, EncodedJPEG) else x for x in items])

    def unpack(self) -> list[torch.Tensor | EncodedJPEG]:
        """The batch list again; each JPEG's bytes are a slice of `data` (no copy)."""
        starts = [0] + self.ends[:-1]
        jpegs = iter(EncodedJPEG(self.data[a:b], path) for a, b, path in zip(starts, self.ends, self.paths))
        return [next(jpegs) if x is None else x for x in self.images]


class TruncatedJPEGError(OSError):
    """The file ends before the JPEG end-of-image marker (an interrupted copy or download)."""


def read_jpeg_or_none(path: str, image: Image.Image) -> EncodedJPEG | None:
    """The file's bytes if `image` (opened, header only) is a baseline-decodable JPEG, else None.

    Grey and RGB JPEGs qualify; CMYK/YCCK ones are left to the host decoder. Raises
    `TruncatedJPEGError` for a JPEG without its end marker, like a truncated file under PIL.
    """
    if image.format != "JPEG" or image.mode not in ("RGB", "L"):
        return None
    image.fp.seek(0)  # the file PIL opened for the header: read it whole, without opening it again
    data = image.fp.read()
    if not data.startswith(JPEG_START) or JPEG_END not in data[-64:]:
        raise TruncatedJPEGError(f"'{path}' is truncated (no JPEG end-of-image marker)")
    return EncodedJPEG(torch.frombuffer(bytearray(data), dtype=torch.uint8), path)


def _host_decode(item: EncodedJPEG) -> torch.Tensor:
    with Image.open(io.BytesIO(item.data.numpy().tobytes())) as img:
        img.load()
        return TF.pil_to_tensor(img.convert("RGB"))


class DeviceJPEGDecoder:
    """Turns a batch list of `EncodedJPEG` and uint8 (3, H, W) tensors into uint8 (3, H, W)
    tensors on `device`, decoding the JPEGs together on the device."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.host_fallbacks = 0  # JPEGs the device decoder rejected, decoded by PIL instead
        self.replaced = 0  # JPEGs neither decoder could read, replaced by another image of the batch

    def _device_decode(self, items: list[EncodedJPEG]) -> list[torch.Tensor | None]:
        with warnings.catch_warnings():  # torchvision 0.29 deprecates its codecs for TorchCodec
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                return list(decode_jpeg([i.data for i in items], mode=ImageReadMode.RGB, device=self.device))
            except RuntimeError:
                pass  # one bad image fails the batched call: decode one by one to find it
            out: list[torch.Tensor | None] = []
            for item in items:
                try:
                    out.append(decode_jpeg(item.data, mode=ImageReadMode.RGB, device=self.device))
                except RuntimeError:
                    out.append(None)
            return out

    def __call__(self, images: list[torch.Tensor | EncodedJPEG] | PackedBatch) -> list[torch.Tensor]:
        if isinstance(images, PackedBatch):
            images = images.unpack()
        encoded = [i for i, x in enumerate(images) if isinstance(x, EncodedJPEG)]
        out: list[torch.Tensor | None] = [
            None if isinstance(x, EncodedJPEG) else x.to(self.device, non_blocking=True) for x in images
        ]
        if encoded:
            decoded = self._device_decode([images[i] for i in encoded])  # type: ignore[misc]
            for i, image in zip(encoded, decoded):
                if image is None:
                    image = self._host_fallback(images[i])  # type: ignore[arg-type]
                out[i] = image
        good = next((x for x in out if x is not None), None)
        if good is None:
            raise RuntimeError("no image of the batch could be decoded: check the data set's JPEG files")
        self.replaced += sum(x is None for x in out)
        return [good if x is None else x for x in out]

    def _host_fallback(self, item: EncodedJPEG) -> torch.Tensor | None:
        try:
            image = _host_decode(item).to(self.device)
        except Exception as e:  # PIL raises many types for bad files
            log.warning("could not decode '%s' (%s): replaced by another image of the batch", item.path,
                        type(e).__name__)
            return None
        self.host_fallbacks += 1
        if self.host_fallbacks == 1:
            log.warning("the device JPEG decoder rejected '%s'; decoded on the host instead (counted as "
                        "decode_host_fallbacks)", item.path)
        return image

