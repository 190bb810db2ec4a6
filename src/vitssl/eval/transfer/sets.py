"""Reading a downstream set's train, val and test parts from DATA_ROOT, never downloading.

Order of preference: a vitssl built-in set; an ImageFolder tree `ROOT/<name>/{train,test}`
(plus `val` if present); the set's torchvision class on `ROOT/<name>` with `download=False`.
A set whose folder is absent is *missing* (listed, skipped); a folder that is there but fits
neither layout is an error naming the set and the layout to use.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset, Subset

from vitssl.data import ImageFolderDataset, load_builtin
from vitssl.data.builtin import stratified_split
from vitssl.eval.transfer.registry import TransferSet

log = logging.getLogger("vitssl.transfer")
VAL_FRACTION = 0.2  # held out of train where a set has no val split (and of everything where it has no test)
SPLIT_SEED = 0


class SetLayoutError(ValueError):
    """A set folder that is present but in no layout vitssl reads."""


@dataclass
class SetSplits:
    """Labelled train, val and test parts of one set; `source` says which reader gave them."""

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    source: str

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}  # type: ignore[arg-type]


class _Labelled(Dataset):
    """(RGB PIL image, int label) items of any torchvision-style dataset, with `targets`."""

    def __init__(self, base: Dataset, targets: list[int]) -> None:
        self.base, self.targets = base, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        image, label = self.base[i]
        return image.convert("RGB"), int(label)


def targets_of(dataset: Any) -> list[int]:
    """Labels of a torchvision dataset without decoding its images where the class keeps them."""
    for attr in ("targets", "_labels", "labels", "y"):
        values = getattr(dataset, attr, None)
        if values is not None and not isinstance(values, dict):
            return [int(v) for v in np.asarray(values).reshape(-1)]
    samples = getattr(dataset, "_samples", None) or getattr(dataset, "samples", None)
    if samples and isinstance(samples[0], (tuple, list)):
        return [int(s[1]) for s in samples]
    return [int(dataset[i][1]) for i in range(len(dataset))]


def _subset(dataset: Any, indices: np.ndarray) -> _Labelled:
    targets = np.asarray(dataset.targets)[indices].tolist()
    return _Labelled(Subset(dataset, indices.tolist()), targets)


def _hold_out(dataset: Any) -> tuple[_Labelled, _Labelled]:
    """A stratified (1 - VAL_FRACTION, VAL_FRACTION) split, the same every run."""
    keep, held = stratified_split(np.asarray(dataset.targets), VAL_FRACTION, SPLIT_SEED)
    return _subset(dataset, keep), _subset(dataset, held)


def _num_classes(*parts: Any) -> int:
    return int(max(max(p.targets, default=-1) for p in parts)) + 1


def _builtin(spec: TransferSet) -> SetSplits:
    train, val = _hold_out(load_builtin(str(spec.builtin), "train"))
    test = load_builtin(str(spec.builtin), "val")
    return SetSplits(train, val, _Labelled(test, test.targets), test.num_classes, f"built-in {spec.builtin}")


def _folder_part(folder: Path, spec: TransferSet) -> ImageFolderDataset:
    try:
        part = ImageFolderDataset(folder)
    except ValueError as e:  # no images at all
        raise SetLayoutError(f"set '{spec.name}': {str(e).splitlines()[0]}") from None
    if part.num_classes < 2:
        raise SetLayoutError(f"set '{spec.name}': {folder} has no class sub-folders: put the images in "
                             f"{folder}/CLASS/IMAGE")
    return part


def _image_folder(folder: Path, spec: TransferSet) -> SetSplits:
    train = _folder_part(folder / "train", spec)
    test = _folder_part(folder / "test", spec)
    if (folder / "val").is_dir():
        val = _folder_part(folder / "val", spec)
        parts = (_Labelled(train, train.targets), _Labelled(val, val.targets))
    else:
        parts = _hold_out(train)
    if train.classes != test.classes:
        raise SetLayoutError(f"set '{spec.name}': {folder}/train and {folder}/test have different class folders: "
                             "give both the same CLASS sub-folders")
    return SetSplits(parts[0], parts[1], _Labelled(test, test.targets), len(train.classes), "ImageFolder")


def _torchvision_part(spec: TransferSet, folder: Path, split: dict[str, Any]) -> _Labelled:
    import torchvision.datasets as tvd

    dataset = getattr(tvd, str(spec.reader))(str(folder), download=False, **spec.common, **split)
    return _Labelled(dataset, targets_of(dataset))


def _torchvision(folder: Path, spec: TransferSet) -> SetSplits:
    if not spec.splits:  # one pool (Caltech-101, EuroSAT): a fixed stratified test fifth, then a val fifth
        pool = _torchvision_part(spec, folder, {})
        rest, test = _hold_out(pool)
        train, val = _hold_out(rest)
    else:
        train = _torchvision_part(spec, folder, spec.splits["train"])
        test = _torchvision_part(spec, folder, spec.splits["test"])
        if "val" in spec.splits:
            val = _torchvision_part(spec, folder, spec.splits["val"])
        else:
            train, val = _hold_out(train)
    return SetSplits(train, val, test, _num_classes(train, val, test), f"torchvision {spec.reader}")


def load_set(spec: TransferSet, root: str | Path | None) -> SetSplits | None:
    """The set's splits; None when its folder is absent (a missing set)."""
    if spec.builtin:
        return _builtin(spec)
    if root is None:
        raise ValueError(f"set '{spec.name}' is read from files: pass --root DATA_ROOT ({spec.where('DATA_ROOT')})")
    folder = Path(root) / spec.name
    if not folder.is_dir():
        return None
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        return _image_folder(folder, spec)
    if spec.reader is None:
        raise SetLayoutError(f"set '{spec.name}': {folder} is not in ImageFolder layout: put its images in "
                             f"{folder}/train/CLASS/ and {folder}/test/CLASS/ (val/ optional)")
    try:
        return _torchvision(folder, spec)
    except (RuntimeError, FileNotFoundError, OSError, ImportError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SetLayoutError(f"set '{spec.name}': {folder} is in no layout vitssl reads (torchvision {spec.reader}: "
                             f"{reason}): put the files {spec.where(str(root))}") from None
