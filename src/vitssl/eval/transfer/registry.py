"""The downstream sets of the transfer suites: where each lives and how it is scored.

One table, `SETS`: each entry names the torchvision class that reads the set's own files
(always `download=False`: nothing is fetched at run time), the split arguments of its train,
val and test parts, and its official metric. Every set can also be given as an ImageFolder
tree, `ROOT/<name>/{train,val,test}/<class>/<image>` (val optional), which is how sets without a
torchvision reader (RESISC-45, VOC-2007 as single-label, ...) and ELEVATER's exported folders
are read. `SUITES` lists the sets of each suite and the protocol it runs.

Sources: the ELEVATER image-classification benchmark (Li et al. 2022, arXiv 2204.08790,
Table 1: 20 sets and their metrics), which EsViT's README names as the benchmark of its
transfer study (EsViT, Li et al. 2022, Sec. 5: linear probe on 18 sets after CLIP, Radford et
al. 2021, Sec. 3.2 and Table 9); MAE-Lite (Wang et al. 2023, Sec. 5 and the repository's
`projects/eval_tools/finetuning_transfer_exp.py`): fine-tuning on six small sets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TOP1, MEAN_PER_CLASS, MAP11, ROC_AUC = "top1", "mean_per_class", "map11", "roc_auc"
METRICS = (TOP1, MEAN_PER_CLASS, MAP11, ROC_AUC)


@dataclass(frozen=True)
class TransferSet:
    """One downstream set. `reader` is a torchvision.datasets class name (None: ImageFolder
    only); `splits` maps train/val/test to that class's keyword arguments (no val: a stratified
    fifth of train is held out, seed 0); `builtin` names a vitssl built-in set instead."""

    name: str
    title: str
    metric: str = TOP1
    reader: str | None = None
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)
    common: dict[str, Any] = field(default_factory=dict)
    builtin: str | None = None

    def where(self, root: str) -> str:
        """Where the user puts the set's files, in words."""
        folder = f"{root.rstrip('/')}/{self.name}"
        tree = f"ImageFolder {folder}/{{train,val,test}}/CLASS/IMAGE"
        if self.reader is None:
            return tree
        return f"torchvision {self.reader}(root='{folder}') files, or {tree}"


def _split(arg: str, train: Any, test: Any, val: Any = None) -> dict[str, dict[str, Any]]:
    splits = {"train": {arg: train}, "test": {arg: test}}
    if val is not None:
        splits["val"] = {arg: val}
    return splits


_TRAIN_FLAG = {"train": {"train": True}, "test": {"train": False}}

SETS: dict[str, TransferSet] = {s.name: s for s in (
    # ELEVATER's 20 image-classification sets (arXiv 2204.08790, Table 1)
    TransferSet("caltech101", "Caltech-101", MEAN_PER_CLASS, "Caltech101", {}, {"target_type": "category"}),
    TransferSet("cifar10", "CIFAR-10", TOP1, "CIFAR10", _TRAIN_FLAG),
    TransferSet("cifar100", "CIFAR-100", TOP1, "CIFAR100", _TRAIN_FLAG),
    TransferSet("country211", "Country-211", TOP1, "Country211", _split("split", "train", "test", "valid")),
    TransferSet("dtd", "DTD", TOP1, "DTD", _split("split", "train", "test", "val")),
    TransferSet("eurosat", "EuroSAT", TOP1, "EuroSAT", {}),
    TransferSet("fer2013", "FER-2013", TOP1, "FER2013", _split("split", "train", "test")),
    TransferSet("fgvc-aircraft", "FGVC-Aircraft", MEAN_PER_CLASS, "FGVCAircraft",
                _split("split", "train", "test", "val"), {"annotation_level": "variant"}),
    TransferSet("food101", "Food-101", TOP1, "Food101", _split("split", "train", "test")),
    TransferSet("gtsrb", "GTSRB", TOP1, "GTSRB", _split("split", "train", "test")),
    TransferSet("hateful-memes", "Hateful-Memes", ROC_AUC),
    TransferSet("kitti-distance", "KITTI-Distance", TOP1),
    TransferSet("mnist", "MNIST", TOP1, "MNIST", _TRAIN_FLAG),
    TransferSet("oxford-flowers", "Oxford-Flowers-102", MEAN_PER_CLASS, "Flowers102",
                _split("split", "train", "test", "val")),
    TransferSet("oxford-pets", "Oxford-IIIT-Pets", MEAN_PER_CLASS, "OxfordIIITPet",
                _split("split", "trainval", "test"), {"target_types": "category"}),
    TransferSet("patch-camelyon", "PatchCamelyon", TOP1, "PCAM", _split("split", "train", "test", "val")),
    TransferSet("rendered-sst2", "Rendered-SST2", TOP1, "RenderedSST2", _split("split", "train", "test", "val")),
    TransferSet("resisc45", "RESISC-45", TOP1),
    TransferSet("stanford-cars", "Stanford-Cars", TOP1, "StanfordCars", _split("split", "train", "test")),
    TransferSet("voc2007", "VOC-2007 (single-label)", MAP11),
    # vitssl's built-in sets (no files needed): their val split is the test part here
    TransferSet("builtin-mnist", "MNIST 5k (built-in)", builtin="mnist"),
    TransferSet("builtin-digits", "scikit-learn digits (built-in)", builtin="digits"),
    TransferSet("builtin-shapes", "procedural shapes (built-in)", builtin="shapes"),
)}

ELEVATER = ("caltech101", "cifar10", "cifar100", "country211", "dtd", "eurosat", "fer2013", "fgvc-aircraft",
            "food101", "gtsrb", "hateful-memes", "kitti-distance", "mnist", "oxford-flowers", "oxford-pets",
            "patch-camelyon", "rendered-sst2", "resisc45", "stanford-cars", "voc2007")
MAE_LITE_TRANSFER = ("cifar10", "cifar100", "oxford-flowers", "oxford-pets", "fgvc-aircraft", "stanford-cars")
BUILTIN = ("builtin-mnist", "builtin-digits", "builtin-shapes")


@dataclass(frozen=True)
class Suite:
    """A named list of sets and the protocol run on each: `linear` (logistic regression on
    frozen features, C swept on val) or `finetune` (end-to-end, a fine-tuning recipe)."""

    name: str
    protocol: str
    sets: tuple[str, ...]
    metric_override: str | None = None  # finetune: MAE-Lite reports top-1 on every set


SUITES: dict[str, Suite] = {s.name: s for s in (
    Suite("elevater", "linear", ELEVATER),
    Suite("mae-lite-finetune", "finetune", MAE_LITE_TRANSFER, TOP1),
    Suite("builtin", "linear", BUILTIN),
)}


def suite_sets(suite: str, names: list[str] | None = None) -> list[TransferSet]:
    """The sets a run covers: the suite's, or the named ones (any registered set)."""
    if suite not in SUITES:
        raise ValueError(f"unknown transfer suite '{suite}': choose one of {', '.join(SUITES)}")
    chosen = list(names) if names else list(SUITES[suite].sets)
    unknown = [n for n in chosen if n not in SETS]
    if unknown:
        raise ValueError(f"unknown transfer set '{unknown[0]}': choose from {', '.join(SETS)}")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"--sets names a set twice ({','.join(chosen)}): name each once")
    return [SETS[n] for n in chosen]
