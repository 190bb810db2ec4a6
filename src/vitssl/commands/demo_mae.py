"""`vitssl demo --method mae`: a short MAE pre-training on MNIST, then reconstructions.

Shows that masked-image modelling learned something a user can see: the masked-patch
reconstruction loss on held-out digits (the same network at random initialisation, and
predicting the data-set mean, are the baselines) and a picture of original, masked input and
reconstruction for a few held-out digits. Beside it, what the encoder's features are worth: 20-NN
top-1 on the held-out split at random initialisation, after pre-training and on raw pixels, as
the DINO demo reports (MAE's features are known to be weak under k-NN; He et al. 2022 Sec. 4.3).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from torchvision.utils import make_grid, save_image

from vitssl.analysis.plots import plot_loss_curve
from vitssl.augment.photometric import to_normalized_tensor
from vitssl.commands.demo import DemoKNN, start_demo_run
from vitssl.commands.demo_eta import RemainingTime
from vitssl.data import build_dataset
from vitssl.engine.logging import log
from vitssl.engine.wording import counted

MAE_DEMO_PRESETS = {"mnist": "demo_mae_mnist"}
HELD_OUT_IMAGES = 1000  # MNIST's whole validation split (sorted by class: take all of it)
MASK_SEED = 123  # one fixed mask for every model measured, so the numbers compare


def held_out_images(method: Any, dataset: str, n: int = HELD_OUT_IMAGES) -> torch.Tensor:
    """The first `n` validation images, normalised as the method's crops are (no crop)."""
    c = method.cfg.crop
    val = build_dataset(dataset, "val")
    return torch.stack([to_normalized_tensor(val[i][0], c.mean, c.std) for i in range(min(n, len(val)))])


@torch.no_grad()
def reconstruction_losses(method: Any, images: torch.Tensor) -> dict[str, float]:
    """Masked-patch loss of the model and of predicting 0 (the mean after normalisation)."""
    method.eval()
    device = next(method.parameters()).device
    images = images.to(device)
    pred, mask = method(images, torch.Generator(device=device).manual_seed(MASK_SEED))
    return {"model": method.loss(pred, images, mask).item(),
            "predict_mean": method.loss(torch.zeros_like(pred), images, mask).item()}


def save_reconstruction_grid(method: Any, images: torch.Tensor, path: Path, n: int = 8, scale: int = 4) -> Path:
    """Rows: original, masked input (masked patches grey), reconstruction; `n` columns."""
    method.eval()
    device = next(method.parameters()).device
    batch = images[:n].to(device)
    masked, recon, _ = method.reconstruct(batch, torch.Generator(device=device).manual_seed(MASK_SEED))
    mean = torch.tensor(method.cfg.crop.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(method.cfg.crop.std, device=device).view(1, 3, 1, 1)
    rows = [(x.float() * std + mean).clamp(0, 1) for x in (batch, masked, recon)]
    _, mask = method(batch, torch.Generator(device=device).manual_seed(MASK_SEED))  # the mask reconstruct drew
    gh, gw = method.grid(batch)
    pixels = mask.view(-1, 1, gh, gw).repeat_interleave(method.patch_size, 2).repeat_interleave(method.patch_size, 3)
    rows[1] = torch.where(pixels.bool(), torch.full_like(rows[1], 0.5), rows[1])  # masked patches grey
    grid = torch.cat(rows).cpu()
    grid = torch.nn.functional.interpolate(grid, scale_factor=scale, mode="nearest")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(make_grid(grid, nrow=len(batch), padding=2, pad_value=1.0), path)
    return path


def run_mae_demo(out: str | Path = "demo_mae_run", dataset: str = "mnist", epochs: int | None = None,
                 seed: int = 0, overrides: list[str] | None = None) -> dict[str, Any]:
    """Pre-train, measure held-out reconstruction before and after, save the picture."""
    if dataset not in MAE_DEMO_PRESETS:
        raise ValueError(f"the MAE demo runs on {sorted(MAE_DEMO_PRESETS)}, not '{dataset}': pass --dataset mnist")
    start = time.perf_counter()
    run_dir = Path(out)
    objs, method, trainer = start_demo_run(MAE_DEMO_PRESETS[dataset], run_dir, dataset, epochs, seed, overrides)
    knn = DemoKNN(objs, dataset, trainer.device)
    evaluated = time.perf_counter()
    images = held_out_images(method, dataset)
    before = reconstruction_losses(method, images)
    knn_before, pixels = knn(method.evaluation_backbone()), knn.pixels()
    log.info("random init: held-out loss %.3f, 20-NN %.3f (raw pixels %.3f); pre-training for %s", before["model"],
             knn_before, pixels, counted(trainer.total_steps, "step"))
    trainer.step_end_callbacks.append(RemainingTime(evaluation_s=time.perf_counter() - evaluated))
    trainer.fit()
    after = reconstruction_losses(method, images)
    knn_after = knn(method.evaluation_backbone())
    spread = torch.linspace(0, len(images) - 1, 8).round().long()  # one column per class region
    grid = save_reconstruction_grid(method, images[spread], run_dir / "reconstructions.png")
    plot_loss_curve(run_dir)

    results = {
        "dataset": dataset,
        "held_out_images": len(images),
        "masked_patch_loss": {"random_init": round(before["model"], 4), "pretrained": round(after["model"], 4),
                              "predict_mean": round(after["predict_mean"], 4)},
        "knn_top1": {"random_init": round(knn_before, 4), "pretrained": round(knn_after, 4),
                     "raw_pixels": round(pixels, 4)},
        "k": 20,
        "steps": trainer.total_steps,
        "seconds": round(time.perf_counter() - start, 1),
        "figure": grid.name,
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    print(format_mae_demo_table(results, run_dir))
    return results


def format_mae_demo_table(results: dict[str, Any], run_dir: Path) -> str:
    r, k = results["masked_patch_loss"], results["knn_top1"]
    return "\n".join([
        f"MAE demo on {results['dataset']} ({counted(results['steps'], 'step')}, {results['seconds']:.0f} s), "
        f"{results['held_out_images']} held-out images",
        "model                  masked-patch loss (lower is better)   20-NN top-1 (higher is better)",
        f"random init            {r['random_init']:<36.3f}  {k['random_init']:.3f}",
        f"predict the mean       {r['predict_mean']:<36.3f}  -",
        f"MAE pre-trained        {r['pretrained']:<36.3f}  {k['pretrained']:.3f}   "
        f"({100 * (k['pretrained'] - k['random_init']):+.1f} points)",
        f"raw pixels             {'-':<36}  {k['raw_pixels']:.3f}   (normalised and flattened: the bar to beat)",
        f"results: {run_dir / 'results.json'}   reconstructions: {run_dir / results['figure']}",
        f"next: vitssl report {run_dir}   (or vitssl pretrain --config demo_mae_mnist --data FOLDER --out RUN)",
    ])
