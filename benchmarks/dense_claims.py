"""The seeds' dense claims at small scale: SelfPatch vs DINO and D-MAE-Lite vs MAE-Lite on shapes.

    python benchmarks/dense_claims.py --out claims                     # both parts, seeds 0 1 2 (CPU: hours)
    python benchmarks/dense_claims.py --out claims --parts selfpatch --jobs 2

Runs the protocol of docs/evaluation.md ("Dense claims at small scale") as `vitssl` subprocesses
(one thread each, `--jobs` at a time), then prints the table: per model, box AP and mask AP of
`vitssl eval detection` (tiny Mask R-CNN preset on `vitssl data shapes-coco`) and, for the
SelfPatch part, the mIoU of `vitssl eval segmentation --head fpn --finetune` on `shapes-fg`, as
mean ± sample sd over the seeds, plus the same fine-tuning from a random initialisation (the
method's network saved after one step at lr 0).

- selfpatch: `demo_shapes` (DINO) and `demo_selfpatch_shapes` with demo_shapes' backbone and
  crops pinned (`AS_DEMO_SHAPES`: the same plus SelfPatch's patch loss), `--pretrain-epochs` each
  (62 steps an epoch).
- mae: one MAE teacher on shapes (`demo_mae_mnist` widened to 192 x 6 blocks, `--teacher-epochs`),
  then MAE-Lite (`demo_mae_mnist` on shapes) and D-MAE-Lite (the same, `--method mae-distill`
  from that teacher), `--mae-epochs` each (31 steps an epoch).

A job whose output exists is skipped, so a stopped protocol continues where it stopped and a
finished one only prints its table. `--tiny` shrinks every pre-training and detection run to one
step and leaves the segmentation out (for tests).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

SHAPES_MAE = ["data.path=shapes", "data.image_size=32", "method.crop.mean=[0.485,0.456,0.406]",
              "method.crop.std=[0.229,0.224,0.225]", "method.crop.flip_prob=0.5"]
TEACHER = ["backbone.embed_dim=192", "backbone.depth=6", "backbone.num_heads=6"]
RANDOM_INIT = ["optim.lr=0", "optim.min_lr=0", "train.epochs=1", "train.max_steps_per_epoch=1"]
TINY_PRETRAIN = ["train.epochs=1", "train.max_steps_per_epoch=1", "train.num_workers=0", "train.progress=false",
                 "train.tensorboard=false"]
# demo_selfpatch_shapes carries a conv stem, KoLeo and milder crops (docs/own-data.md); the
# comparison with DINO pins demo_shapes' backbone and crops, so only the patch loss differs
AS_DEMO_SHAPES = ["backbone.stem=patch", "method.koleo_weight=0", "method.crops.global_crops_scale=[0.35,1.0]",
                  "method.crops.local_crops_scale=[0.15,0.35]"]
MODELS = {"selfpatch": ("dino", "selfpatch", "random"), "mae": ("mae-lite", "d-mae-lite", "random")}


@dataclass
class Job:
    name: str
    argv: list[str]  # vitssl's arguments
    output: Path  # the job is done when this exists
    after: list[str] = field(default_factory=list)


def pretrain_job(name: str, folder: Path, args: list[str], tiny: bool, after: list[str] | None = None) -> Job:
    tiny_args = TINY_PRETRAIN if tiny and "train.max_steps_per_epoch=1" not in args else []
    return Job(name, ["pretrain", *args, "--out", str(folder), *tiny_args], folder / "checkpoint.pt", after or [])


def eval_jobs(run: str, folder: Path, seed: int, coco: Path, a: argparse.Namespace, segment: bool) -> list[Job]:
    """Detection (and FPN segmentation) fine-tuning of one pre-trained run, one seed."""
    sets = ["--train", f"{coco}/train.json:{coco}/train", "--val", f"{coco}/val.json:{coco}/val"]
    det = ["eval", "detection", "--checkpoint", str(folder), *sets, "--epochs", str(a.det_epochs),
           "--seed", str(seed), "--device", "cpu", "--out", str(folder / "det.json")]
    jobs = [Job(f"{run}:det", det + (["--iters", "1"] if a.tiny else []), folder / "det.json", [run, "coco"])]
    if segment and not a.tiny:  # its shortest run is an epoch of shapes-fg: minutes, not seconds
        seg = ["eval", "segmentation", "--checkpoint", str(folder), "--train", "shapes-fg", "--val", "shapes-fg",
               "--head", "fpn", "--finetune", "--epochs", str(a.seg_epochs), "--seed", str(seed), "--device",
               "cpu", "--out", str(folder / "seg.json")]
        jobs.append(Job(f"{run}:seg", seg, folder / "seg.json", [run]))
    return jobs


def plan(a: argparse.Namespace) -> list[Job]:
    """Every job of the chosen parts, pre-training first, then fine-tuning seed by seed."""
    root, coco = Path(a.out), Path(a.out) / "shapes_coco"
    size = ["--train-images", "8", "--val-images", "4"] if a.tiny else []
    pre, evals = [Job("coco", ["data", "shapes-coco", "--out", str(coco), *size], coco / "val.json")], []
    if "selfpatch" in a.parts:
        part = root / "selfpatch"
        for s in a.seeds:
            seed, ep = [f"train.seed={s}"], [f"train.epochs={a.pretrain_epochs}"]
            pre += [pretrain_job(f"dino_s{s}", part / f"dino_s{s}", ["--config", "demo_shapes", *seed, *ep], a.tiny),
                    pretrain_job(f"selfpatch_s{s}", part / f"selfpatch_s{s}",
                                 ["--config", "demo_selfpatch_shapes", *seed, *ep, *AS_DEMO_SHAPES], a.tiny),
                    pretrain_job(f"random_s{s}", part / f"random_s{s}", ["--config", "demo_shapes", *seed, *RANDOM_INIT],
                                 a.tiny)]
            evals += [j for m in MODELS["selfpatch"] for j in eval_jobs(f"{m}_s{s}", part / f"{m}_s{s}", s, coco, a, True)]
    if "mae" in a.parts:
        part, base = root / "mae", ["--config", "demo_mae_mnist", *SHAPES_MAE]
        pre.append(pretrain_job("teacher", part / "teacher", [*base, *TEACHER, f"train.epochs={a.teacher_epochs}"], a.tiny))
        for s in a.seeds:
            args = [*base, f"train.seed={s}", f"train.epochs={a.mae_epochs}"]
            distill = ["--method", "mae-distill", "--teacher", str(part / "teacher")]
            pre += [pretrain_job(f"mae-lite_s{s}", part / f"mae-lite_s{s}", args, a.tiny),
                    pretrain_job(f"d-mae-lite_s{s}", part / f"d-mae-lite_s{s}", [*args, *distill], a.tiny, ["teacher"]),
                    pretrain_job(f"mae_random_s{s}", part / f"random_s{s}", [*base, f"train.seed={s}", *RANDOM_INIT],
                                 a.tiny)]
            for m, run in (("mae-lite", f"mae-lite_s{s}"), ("d-mae-lite", f"d-mae-lite_s{s}"), ("random", f"mae_random_s{s}")):
                evals += eval_jobs(run, part / f"{m}_s{s}", s, coco, a, False)
    return pre + evals


def run_jobs(jobs: list[Job], workers: int, log_dir: Path) -> list[str]:
    """Run the jobs `workers` at a time, each after those it needs; the names of the failed ones."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log_dir.mkdir(parents=True, exist_ok=True)
    done = {j.name for j in jobs if j.output.exists()}
    waiting, running, failed = [j for j in jobs if j.name not in done], {}, []
    while waiting or running:
        for job in [j for j in waiting if all(d in done for d in j.after)][:max(0, workers - len(running))]:
            waiting.remove(job)
            log = (log_dir / f"{job.name.replace(':', '.')}.log").open("w")
            print(f"start {job.name}: vitssl {' '.join(job.argv)}", flush=True)
            running[job.name] = (subprocess.Popen([sys.executable, "-m", "vitssl", *job.argv], stdout=log,
                                                  stderr=subprocess.STDOUT, env=env), log, time.time())
        if any(d in failed for j in waiting for d in j.after):
            failed += [j.name for j in waiting if any(d in failed for d in j.after)]
            waiting = [j for j in waiting if j.name not in failed]
        for name, (proc, log, start) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                del running[name]
                (done.add if proc.returncode == 0 else failed.append)(name)
                print(f"{'done' if proc.returncode == 0 else 'FAILED'} {name} ({time.time() - start:.0f} s)", flush=True)
        if running and not any(p.poll() is not None for p, _, _ in running.values()):
            time.sleep(1.0)
        elif not running and waiting and not any(all(d in done for d in j.after) for j in waiting):
            failed += [j.name for j in waiting]  # a job whose input never came
            break
    return failed


def mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    sd = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.3f}{sd} (n={len(values)})"


def read_result(path: Path, key: tuple[str, ...]) -> float | None:
    if not path.exists():
        return None
    value = json.loads(path.read_text())
    for k in key:
        value = value[k]
    return float(value)


def table(out: Path, part: str, seeds: list[int]) -> str:
    """Markdown table of one part: mean ± sd over the seeds that finished."""
    columns = [("box AP", "det.json", ("bbox", "AP")), ("mask AP", "det.json", ("segm", "AP"))]
    if part == "selfpatch":
        columns.append(("FPN mIoU (shapes-fg)", "seg.json", ("miou",)))
    lines = ["| pre-training | " + " | ".join(c[0] for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for model in MODELS[part]:
        cells = []
        for _, file, key in columns:
            found = [read_result(out / part / f"{model}_s{s}" / file, key) for s in seeds]
            cells.append(mean_sd([v for v in found if v is not None]))
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for the data, runs, results and logs")
    p.add_argument("--parts", nargs="+", choices=sorted(MODELS), default=sorted(MODELS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--pretrain-epochs", type=int, default=2, help="DINO and SelfPatch (62 steps an epoch)")
    p.add_argument("--teacher-epochs", type=int, default=8, help="the MAE teacher (31 steps an epoch)")
    p.add_argument("--mae-epochs", type=int, default=4, help="MAE-Lite and D-MAE-Lite (31 steps an epoch)")
    p.add_argument("--det-epochs", type=int, default=4, help="Mask R-CNN fine-tuning (25 iterations an epoch)")
    p.add_argument("--seg-epochs", type=int, default=1, help="FPN fine-tuning (31 steps an epoch)")
    p.add_argument("--jobs", type=int, default=2, help="processes at a time (one thread each)")
    p.add_argument("--tiny", action="store_true", help="one step of each run, no segmentation (tests)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    failed = run_jobs(plan(a), a.jobs, Path(a.out) / "logs")
    for part in a.parts:
        print(f"\n{part} (seeds {' '.join(map(str, a.seeds))}):\n{table(Path(a.out), part, a.seeds)}")
    if failed:
        print(f"failed: {', '.join(failed)} (logs in {Path(a.out) / 'logs'})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
