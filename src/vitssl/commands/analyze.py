"""`vitssl analyze ...` and `vitssl benchmark ...`: load what the command names, call the library."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vitssl.analysis.images import load_images
from vitssl.commands.run_folder import run_folder_of
from vitssl.engine.device import resolve_device
from vitssl.engine.outputs import save_results
from vitssl.eval.pretrained import (
    Pretrained,
    image_size_or_default,
    load_pretrained,
    load_run,
    normalization,
)


def run_correspondence(checkpoint: str, images: str, out: str | None = None, image_size: int | None = None,
                       top: int = 10, limit: int = 16, which: str = "teacher", device: str = "auto",
                       overwrite: bool = True) -> dict[str, Any]:
    """EsViT correspondence analysis of a checkpoint's backbone; pictures and JSON in `out`.

    `overwrite=False` (the CLI's default) refuses a folder that already holds these outputs."""
    from vitssl.analysis.correspondence import analyze_correspondence

    _check_out(out, checkpoint, "correspondence", overwrite, ("correspondence_*.png", "correspondence.json"))

    backbone, config = load_pretrained(checkpoint, which)
    size = image_size_or_default(image_size, config)
    out_dir = Path(out) if out else run_folder_of(checkpoint) / "correspondence"
    result = analyze_correspondence(backbone.to(resolve_device(device)), load_images(images, limit), size, out_dir, top)
    result.update(checkpoint=str(checkpoint), image_source=images, backbone=which)
    save_results(result, out_dir / "correspondence.json")
    return result


def run_throughput(backbones: list[str], checkpoint: str | None = None, batch_size: int = 128,
                   image_size: int | None = None, precision: str = "bf16", device: str = "auto",
                   iters: int = 20) -> list[tuple[str, Any]]:
    """Throughput of named backbones (fresh weights: speed does not depend on them) at
    `image_size` (default 224), or of a checkpoint's backbone at `image_size` (default: the size
    the run trained at, where it is used)."""
    from vitssl.backbones import create_backbone
    from vitssl.bench import measure_throughput
    from vitssl.eval.pretrained import default_image_size

    dev = resolve_device(device)
    if dev.type == "cpu" and precision == "bf16":
        precision = "fp32"
    size = image_size or 224
    models = [(name, create_backbone(name, img_size=size), size) for name in backbones]
    if checkpoint:
        backbone, config = load_pretrained(checkpoint)
        models.append((str(checkpoint), backbone, image_size or default_image_size(config)))
    if not models:
        raise ValueError("nothing to measure: pass --backbone NAME (e.g. vit_small swin_tiny) or --checkpoint")
    return [(name, measure_throughput(model, batch_size, at, dev, precision, iters=iters))
            for name, model, at in models]


def _check_out(out: str | None, checkpoint: str | Path, default: str, overwrite: bool,
               patterns: tuple[str, ...]) -> None:
    """Refuse, before the model is loaded, an output folder that cannot be written or already
    holds these outputs (`vitssl.engine.outputs`)."""
    from vitssl.engine.outputs import check_output_dir

    check_output_dir(Path(out) if out else run_folder_of(checkpoint) / default, overwrite, patterns)


def run_attention_maps(checkpoint: str, images: str, out: str | None = None, image_size: int | None = None,
                       limit: int = 8, which: str = "teacher", device: str = "auto", overwrite: bool = True) -> list[str]:
    """Last-layer attention of a checkpoint's ViT per head, as PNG overlays in `out`."""
    from vitssl.analysis.attention_maps import save_attention_maps
    from vitssl.backbones import ViT

    _check_out(out, checkpoint, "attention", overwrite, ("attention_*.png",))

    run = load_run(checkpoint, which)
    vit = run.network  # SelfPatch: its ViT, without the aggregation module
    if not isinstance(vit, ViT):
        raise ValueError(f"attention maps need a ViT backbone, this checkpoint has {type(vit).__name__} "
                         "(window attention, or none at all, has no image-wide map)")
    out_dir = Path(out) if out else run_folder_of(checkpoint) / "attention"
    paths = save_attention_maps(vit.to(resolve_device(device)), load_images(images, limit), out_dir,
                                image_size_or_default(image_size, run.config))
    return [str(p) for p in paths]


def _image_batches(source: str, image_size: int | None, limit: int, batch_size: int, run: Pretrained) -> list:
    """(B, 3, S, S) batches of up to `limit` images (labels not needed), normalised as the run's crops."""
    import torch

    from vitssl.eval.features import eval_transform

    size = image_size_or_default(image_size, run.config)
    transform = eval_transform(source, size, normalization=normalization(run.eval_input))  # built-in sets: resized only
    tensors = torch.stack([transform(im) for im in load_images(source, limit)])
    return list(tensors.split(batch_size))


def _vit_of(run: Pretrained, what: str) -> Any:
    """The run's backbone network (SelfPatch: without its aggregation module), which must be a ViT."""
    from vitssl.backbones import ViT

    if not isinstance(run.network, ViT):
        raise ValueError(f"{what} needs a ViT backbone, this checkpoint has {type(run.network).__name__}")
    return run.network


def run_layer_similarity(checkpoint_a: str, checkpoint_b: str, data: str, out: str | None = None,
                         image_size: int | None = None, limit: int = 512, batch_size: int = 64,
                         device: str = "auto", overwrite: bool = True) -> dict[str, Any]:
    """MAE-Lite's layer-representation similarity: linear CKA between every layer of two ViTs."""
    from vitssl.analysis.cka import cka_heatmap, cka_matrix

    _check_out(out, checkpoint_a, "layer_similarity", overwrite, ("cka.png", "cka.json"))

    run_a, run_b = load_run(checkpoint_a), load_run(checkpoint_b)
    a, b = _vit_of(run_a, "layer similarity"), _vit_of(run_b, "layer similarity")
    dev = resolve_device(device)
    batches = _image_batches(data, image_size, limit, batch_size, run_a)
    if len(batches[-1]) < 4:  # the unbiased estimator needs 4 examples per batch
        batches = batches[:-1] or batches
    matrix = cka_matrix(a.to(dev), b.to(dev), batches, dev)
    out_dir = Path(out) if out else run_folder_of(checkpoint_a) / "layer_similarity"
    names = (Path(checkpoint_a).name or "A", Path(checkpoint_b).name or "B")
    picture = cka_heatmap(matrix, out_dir / "cka.png", labels=names)
    result = {"cka": matrix.tolist(), "a": str(checkpoint_a), "b": str(checkpoint_b), "data": data,
              "images": sum(len(x) for x in batches), "picture": str(picture)}
    save_results(result, out_dir / "cka.json")
    return result


def run_attention_stats(checkpoint: str, data: str, out: str | None = None, image_size: int | None = None,
                        limit: int = 256, batch_size: int = 32, distance_unit: str = "pixel",
                        device: str = "auto", overwrite: bool = True) -> dict[str, Any]:
    """Mean attention distance and entropy per layer and head (MAE-Lite's attention analysis)."""
    from vitssl.analysis.attention_stats import attention_statistics, plot_attention_stats

    _check_out(out, checkpoint, "attention_stats", overwrite, ("attention_stats.png", "attention_stats.json"))

    run = load_run(checkpoint)
    vit = _vit_of(run, "attention statistics")
    dev = resolve_device(device)
    batches = _image_batches(data, image_size, limit, batch_size, run)
    stats = attention_statistics(vit.to(dev), [x.to(dev) for x in batches], distance_unit=distance_unit)
    out_dir = Path(out) if out else run_folder_of(checkpoint) / "attention_stats"
    picture = plot_attention_stats(stats, out_dir / "attention_stats.png")
    result = {**stats, "checkpoint": str(checkpoint), "data": data, "picture": str(picture)}
    save_results(result, out_dir / "attention_stats.json")
    return result
