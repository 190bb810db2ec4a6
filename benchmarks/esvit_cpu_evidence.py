"""Short CPU EsViT pre-training of one backbone on built-in data: 20-NN and region correspondence
of the same seeded network at random initialisation and after pre-training (docs/methods/esvit.md).

    python benchmarks/esvit_cpu_evidence.py --preset esvit_cvt_tiny_cpu --data shapes --seed 0 \
        --out runs/ev_cvt_s0 [--overrides method.koleo_weight=0 ...]

k-NN is `vitssl demo`'s protocol (teacher's pooled view feature, the run's normalisation, built-in
train split as memory, val split as queries; the raw normalised pixels through the same function as
a second baseline); correspondence is `vitssl analyze correspondence`'s
(`--image-size 96 --top 4 --limit 50` on the built-in val split), with standard errors over images
and of the per-image differences between the two networks. Writes OUT/evidence.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from vitssl.analysis.correspondence import analyze_correspondence, standard_error
from vitssl.analysis.images import load_images
from vitssl.commands.demo import DEMO_PRESETS, DemoKNN, start_demo_run
from vitssl.config import load_config
from vitssl.methods import method_configs


def correspondence(backbone: torch.nn.Module, data: str, out: Path, size: int, top: int, limit: int) -> dict:
    return analyze_correspondence(backbone, load_images(data, limit), size, out, top, max_pictures=2)


def compare_correspondence(random_init: dict, pretrained: dict) -> dict:
    """Both accuracies with their standard errors over images, and the pre-trained minus random
    difference with the standard error of the per-image differences (the same images score both)."""
    diffs = [p - r for p, r in zip(pretrained["image_accuracy"], random_init["image_accuracy"], strict=True)]
    return {"random_init": _rounded(random_init["accuracy"]), "pretrained": _rounded(pretrained["accuracy"]),
            "standard_error": {"random_init": _rounded(random_init["accuracy_standard_error"]),
                               "pretrained": _rounded(pretrained["accuracy_standard_error"])},
            "difference": {"mean": _rounded(sum(diffs) / len(diffs)), "standard_error": _rounded(standard_error(diffs))}}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def preset_data(preset: str) -> str:
    """The built-in set a preset trains on (its `data.path`), shapes where it names none."""
    path = load_config(preset, [], method_configs()).data.path
    return path if path in DEMO_PRESETS else "shapes"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--data", default=None, choices=sorted(DEMO_PRESETS),
                   help="built-in set (default: the preset's data.path where that is one, else shapes)")
    p.add_argument("--preset", default=None, help="default: the data set's demo preset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--knn-every", type=int, default=2, help="online 20-NN every N epochs (0: off)")
    p.add_argument("--corr-size", type=int, default=96)
    p.add_argument("--corr-top", type=int, default=4)
    p.add_argument("--corr-limit", type=int, default=50)
    p.add_argument("--overrides", nargs="*", action="extend", default=[],
                   help="KEY=VALUE config overrides; given twice, both lists apply (the later wins on a key)")
    a = p.parse_args(argv)
    start, out = time.perf_counter(), Path(a.out)
    preset = a.preset or DEMO_PRESETS[a.data or "shapes"]
    a.data = a.data or preset_data(preset)
    objs, method, trainer = start_demo_run(preset, out, a.data, a.epochs, a.seed, a.overrides)
    knn = DemoKNN(objs, a.data, trainer.device)  # the run's evaluation size and normalisation
    init = copy.deepcopy(method.evaluation_backbone())
    knn_init = knn(init)
    print(f"20-NN random init {knn_init:.3f}; {trainer.total_steps} steps", flush=True)
    if a.knn_every:
        def online_knn(tr, epoch: int) -> dict[str, float] | None:
            if (epoch + 1) % a.knn_every:
                return None
            top1 = knn(method.evaluation_backbone())
            print(f"epoch {epoch + 1}: 20-NN {top1:.3f}", flush=True)
            return {"knn20_top1": top1}
        trainer.epoch_end_callbacks.append(online_knn)
    trainer.fit()
    knn_after = knn(method.evaluation_backbone())
    # after training: an evaluation before it would advance the global RNG that drop path draws from
    knn_pixels = knn.pixels()
    print(f"20-NN pre-trained {knn_after:.3f}, raw pixels {knn_pixels:.3f}", flush=True)
    scored = {name: correspondence(net, a.data, out / f"correspondence_{name}", a.corr_size, a.corr_top, a.corr_limit)
              for name, net in (("random_init", init), ("pretrained", method.evaluation_backbone()))}
    corr = compare_correspondence(scored["random_init"], scored["pretrained"])
    results = {"data": a.data, "preset": preset, "seed": a.seed, "overrides": a.overrides,
               "steps": trainer.total_steps, "knn20_top1": {"random_init": round(knn_init, 4),
                                                            "pretrained": round(knn_after, 4),
                                                            "raw_pixels": round(knn_pixels, 4)},
               "correspondence": {**corr, "chance": _rounded(scored["pretrained"]["chance"]), "image_size": a.corr_size,
                                  "top": a.corr_top, "images": a.corr_limit},
               "seconds": round(time.perf_counter() - start, 1)}
    (out / "evidence.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
