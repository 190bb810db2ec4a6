"""Options that several `vitssl` sub-commands share, each defined once: the same name, type, default
and help wherever it appears, so `--device` or `--checkpoint` never means two things."""

from __future__ import annotations

import argparse

from vitssl.cli_parsing.arguments import non_negative_int, positive_int

CHECKPOINT_HELP = "run folder or checkpoint .pt"
IMAGE_SIZE_HELP = "crop size (default: the training crop size)"
DEVICE_HELP = "cpu, cuda, cuda:N, or auto: a GPU if one is visible, else the CPU"
WEIGHTS_HELP = ("which of the run's networks: teacher = the method's evaluation backbone (the EMA teacher of "
                "DINO, EsViT and SelfPatch; MAE's encoder), student = the trained, not averaged, backbone "
                "(for MAE the same encoder)")
WORKERS_HELP = "DataLoader worker processes (0: load in the main process)"


def add_checkpoint(p: argparse.ArgumentParser, *, required: bool = True, help: str = CHECKPOINT_HELP) -> None:
    p.add_argument("--checkpoint", required=required, default=None, help=help)


def add_out(p: argparse.ArgumentParser, help: str, *, required: bool = False) -> None:
    p.add_argument("--out", required=required, default=None, help=help)


def add_image_size(p: argparse.ArgumentParser, *, default: int | None = None, help: str = IMAGE_SIZE_HELP) -> None:
    p.add_argument("--image-size", type=positive_int, default=default, help=help)


def add_batch_size(p: argparse.ArgumentParser, default: int | None, help: str = "images per forward pass") -> None:
    p.add_argument("--batch-size", type=positive_int, default=default, help=help)


def add_num_workers(p: argparse.ArgumentParser, default: int) -> None:
    p.add_argument("--num-workers", type=non_negative_int, default=default, help=WORKERS_HELP)


def add_seed(p: argparse.ArgumentParser, help: str = "random seed (same seed, same result)") -> None:
    p.add_argument("--seed", type=non_negative_int, default=0, help=help)


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help=DEVICE_HELP)


def add_weights_choice(p: argparse.ArgumentParser) -> None:
    """`--backbone teacher|student`: which network of a run to load (not a backbone architecture)."""
    p.add_argument("--backbone", choices=["teacher", "student"], default="teacher", help=WEIGHTS_HELP)


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Where to run a loaded checkpoint and which of its networks: --device and --backbone."""
    add_device(p)
    add_weights_choice(p)
