"""Short CPU EsViT pre-training of one backbone on built-in data: 20-NN and region correspondence
of the same seeded network at random initialisation and after pre-training (docs/methods/esvit.md).

    python benchmarks/esvit_cpu_evidence.py --preset esvit_cvt_tiny_cpu --data shapes --seed 0 \
        --out runs/ev_cvt_s0 [--overrides method.koleo_weight=0 ...]

k-NN is `vitssl demo`'s protocol (teacher's pooled view feature, the run's normalisation, built-in
train split as memory, val split as queries); correspondence is `vitssl analyze correspondence`'s
(`--image-size 96 --top 4 --limit 50` on the built-in val split). Writes OUT/evidence.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from vitssl.analysis.correspondence import analyze_correspondence
from vitssl.analysis.images import load_images
from vitssl.commands.demo import DEMO_PRESETS, knn_top1, start_demo_run
from vitssl.eval.pretrained import normalization
from vitssl.methods import method_class


def correspondence(backbone: torch.nn.Module, data: str, out: Path, size: int, top: int, limit: int) -> float:
    result = analyze_correspondence(backbone, load_images(data, limit), size, out, top, max_pictures=2)
    return round(result["accuracy"], 4)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--data", default="shapes", choices=sorted(DEMO_PRESETS))
    p.add_argument("--preset", default=None, help="default: the data set's demo preset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--knn-every", type=int, default=2, help="online 20-NN every N epochs (0: off)")
    p.add_argument("--corr-size", type=int, default=96)
    p.add_argument("--corr-top", type=int, default=4)
    p.add_argument("--corr-limit", type=int, default=50)
    p.add_argument("--overrides", nargs="*", default=[])
    a = p.parse_args(argv)
    start, out = time.perf_counter(), Path(a.out)
    preset = a.preset or DEMO_PRESETS[a.data]
    objs, method, trainer = start_demo_run(preset, out, a.data, a.epochs, a.seed, a.overrides)
    eval_input = method_class(objs.method.name).evaluation_input(objs.method, objs.backbone)
    size, norm = eval_input.image_size, normalization(eval_input)
    init = copy.deepcopy(method.evaluation_backbone())
    knn_init = knn_top1(init, a.data, size, trainer.device, normalization=norm)
    print(f"20-NN random init {knn_init:.3f}; {trainer.total_steps} steps", flush=True)
    if a.knn_every:
        def online_knn(tr, epoch: int) -> dict[str, float] | None:
            if (epoch + 1) % a.knn_every:
                return None
            top1 = knn_top1(method.evaluation_backbone(), a.data, size, tr.device, normalization=norm)
            print(f"epoch {epoch + 1}: 20-NN {top1:.3f}", flush=True)
            return {"knn20_top1": top1}
        trainer.epoch_end_callbacks.append(online_knn)
    trainer.fit()
    knn_after = knn_top1(method.evaluation_backbone(), a.data, size, trainer.device, normalization=norm)
    corr = {name: correspondence(net, a.data, out / f"correspondence_{name}",
                                 a.corr_size, a.corr_top, a.corr_limit)
            for name, net in (("random_init", init), ("pretrained", method.evaluation_backbone()))}
    grid = a.corr_size // init.patch_size
    results = {"data": a.data, "preset": preset, "seed": a.seed, "overrides": a.overrides,
               "steps": trainer.total_steps, "knn20_top1": {"random_init": round(knn_init, 4),
                                                            "pretrained": round(knn_after, 4)},
               "correspondence": {**corr, "chance": round(1 / grid**2, 4), "image_size": a.corr_size,
                                  "top": a.corr_top, "images": a.corr_limit},
               "seconds": round(time.perf_counter() - start, 1)}
    (out / "evidence.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
