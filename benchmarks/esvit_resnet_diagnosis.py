"""Why the CPU ResNet preset does not beat its random initialisation (docs/methods/esvit.md): the
BatchNorm, weight-motion and trial-variant checks behind the ResNet rows of the evidence table.

    python benchmarks/esvit_resnet_diagnosis.py inspect RUN
        BatchNorm counters of teacher and student, 20-NN of the run's teacher, student and seeded
        random init with BatchNorm on running statistics (the protocol), on batch statistics, and
        recalibrated (running statistics re-estimated on the clean train split), and how far each
        weight tensor moved from its initial value; then, for the random and the trained teacher,
        how alike two global views of one image are against two images (mean cosine of the
        batch-centred pooled features of 256 train images, BatchNorm in training mode as the
        teacher runs while training, and in eval mode).
    python benchmarks/esvit_resnet_diagnosis.py spread PRESET...
        How spread the seeded random network's pooled features are on shapes (mean pairwise
        cosine, effective rank).
    python benchmarks/esvit_resnet_diagnosis.py supervised PRESET LR [OVERRIDES...]
        The preset's backbone trained with the shapes labels (a linear classifier, AdamW at LR) on
        the same augmented global crops for the same 248 steps: 20-NN after each epoch.
    python benchmarks/esvit_resnet_diagnosis.py trial NAME EVIDENCE-ARGS...
        `benchmarks/esvit_cpu_evidence.py EVIDENCE-ARGS` with one change that vitssl does not have
        (NAME: cifar_stem, avg_down, lars, eval_teacher, zero_init, backbone_lr10,
        koleo_centred, or several joined by +; see TRIALS),
        for the record only.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn

from vitssl.backbones import resnet
from vitssl.commands.demo import knn_top1
from vitssl.config import load_config, to_objects
from vitssl.engine import trainer as trainer_module
from vitssl.engine.checkpoint import load_checkpoint
from vitssl.engine.rng import seed_everything
from vitssl.eval.features import eval_transform
from vitssl.losses import koleo as koleo_module
from vitssl.methods import build_method, method_configs
from vitssl.methods import teacher_student as ts

sys.path.insert(0, str(Path(__file__).parent))
import esvit_cpu_evidence  # noqa: E402

BatchNorm = nn.modules.batchnorm._BatchNorm


# -- inspect ---------------------------------------------------------------------------------
def recalibrated(net: nn.Module, data: str, size: int, norm: tuple) -> nn.Module:
    """A copy whose BatchNorm running statistics are the cumulative average over the clean train split."""
    from vitssl.data import build_dataset

    net, ds = copy.deepcopy(net), build_dataset(data, split="train")
    transform = eval_transform(data, size, None, norm)
    images = torch.stack([transform(ds[i][0]) for i in range(len(ds))])
    for bn in (m for m in net.modules() if isinstance(m, BatchNorm)):
        bn.reset_running_stats()
        bn.momentum = None
    net.train()
    with torch.no_grad():
        for i in range(0, len(images), 100):
            net(images[i:i + 100])
    return net


class BatchStatistics(nn.Module):
    """`net` whose BatchNorm layers stay in training mode when evaluated (batch statistics)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.patch_size = copy.deepcopy(net), net.patch_size

    def train(self, mode: bool = True) -> BatchStatistics:
        super().train(mode)
        for bn in (m for m in self.net.modules() if isinstance(m, BatchNorm)):
            bn.train()
        return self

    def forward(self, x: torch.Tensor):
        return self.net(x)


def view_agreement(method: nn.Module, net: nn.Module, data: str, images: int = 256) -> str:
    """Mean cosine of centred pooled features: two global views of one image / two images."""
    from vitssl.data import build_dataset

    ds, generator = build_dataset(data, split="train"), torch.Generator().manual_seed(0)
    views, _ = method.collate([(method.multicrop(ds[i][0], generator), 0) for i in range(images)])
    out, was_training = [], net.training
    with torch.no_grad():
        for mode in (True, False):
            net.train(mode)
            f = torch.cat([net(v).pooled for v in views[:2]])
            f = nn.functional.normalize(f - f.mean(0), dim=-1)
            sim = f[:images] @ f[images:].t()
            other = (sim.sum() - sim.diag().sum()) / (images * images - images)
            out.append(f"{'train' if mode else 'eval'}-mode BatchNorm {sim.diag().mean():.3f} / {other:.3f}")
    net.train(was_training)
    return ", ".join(out)


def inspect(run: str) -> None:
    cfg = to_objects(load_config(None, [], method_configs(), base=OmegaConf.load(f"{run}/config.yaml")))
    seed_everything(cfg.train.seed)
    method = build_method(cfg.method, cfg.backbone)
    initial = {k: v.clone() for k, v in method.state_dict().items()}
    init = copy.deepcopy(method.evaluation_backbone())
    method.load_state_dict(load_checkpoint(f"{run}/checkpoint.pt")["method"])
    data, size = cfg.data.path, cfg.method.crops.global_crops_size
    norm = (tuple(cfg.method.crops.mean), tuple(cfg.method.crops.std))
    teacher, student = method.teacher.backbone, method.student.backbone
    counters = [next(m for m in n.modules() if isinstance(m, BatchNorm)).num_batches_tracked.item()
                for n in (teacher, student)]
    print(f"BatchNorm updates: teacher {counters[0]}, student {counters[1]}")
    for name, net in (("random init", init), ("teacher", teacher), ("student", student)):
        scores = [knn_top1(n, data, size, torch.device("cpu"), normalization=norm)
                  for n in (net, BatchStatistics(net), recalibrated(net, data, size, norm))]
        print(f"20-NN {name}: running stats {scores[0]:.3f}, batch stats {scores[1]:.3f}, recalibrated {scores[2]:.3f}")
    for key, value in method.state_dict().items():
        if key.startswith("teacher.") and value.dtype.is_floating_point and value.dim() > 1:
            moved = (value - initial[key]).norm() / initial[key].norm()
            print(f"{key}: |w0| {initial[key].norm():.2f}, |w - w0| / |w0| {moved:.3f}")
    for name, net in (("random init", init), ("teacher", teacher)):
        print(f"views of one image / two images, {name}: {view_agreement(method, net, data)}")


# -- spread of the random features -----------------------------------------------------------
def spread(presets: list[str]) -> None:
    """Mean pairwise cosine and effective rank (exp of the entropy of the centred spectrum) of the
    seeded random evaluation backbone's pooled features on the shapes val split."""
    from vitssl.eval.features import labelled_features

    for preset in presets:
        cfg = to_objects(load_config(preset, ["train.seed=0"], method_configs()))
        seed_everything(0)
        net, crops = build_method(cfg.method, cfg.backbone).evaluation_backbone(), cfg.method.crops
        f, _, _ = labelled_features(net, "shapes", "val", crops.global_crops_size, torch.device("cpu"),
                                    num_workers=0, normalization=(crops.mean, crops.std))
        f = nn.functional.normalize(f.float(), dim=-1)
        cosine = ((f @ f.t()).sum() - len(f)) / (len(f) ** 2 - len(f))
        energy = torch.linalg.svdvals(f - f.mean(0)) ** 2
        p = energy / energy.sum()
        rank = torch.exp(-(p * p.clamp_min(1e-12).log()).sum())
        print(f"{preset}: mean pairwise cosine {cosine:.3f}, effective rank {rank:.1f} of {f.shape[1]}")


# -- supervised bound ------------------------------------------------------------------------
def supervised(preset: str, lr: float, overrides: list[str]) -> None:
    """The preset's student backbone trained with labels instead: a linear classifier on its pooled
    feature, cross-entropy on the first global crop of the preset's multi-crop, AdamW at `lr`
    (weight decay 0.04), batch 32, 4 epochs; 20-NN (the protocol's) after each epoch. What the
    same network, data and augmentation give in the same number of steps when the target is known."""
    from vitssl.data import build_dataset

    cfg = to_objects(load_config(preset, ["train.seed=0", *overrides], method_configs()))
    seed_everything(0)
    method = build_method(cfg.method, cfg.backbone)
    net, device = method.student.backbone, torch.device("cpu")
    size, norm = cfg.method.crops.global_crops_size, (cfg.method.crops.mean, cfg.method.crops.std)
    print(f"random init: 20-NN {knn_top1(copy.deepcopy(net), 'shapes', size, device, normalization=norm):.3f}")
    data, head = build_dataset("shapes", "train", 0), nn.Linear(net.embed_dim, 5)
    optimizer = torch.optim.AdamW([*net.parameters(), *head.parameters()], lr=lr, weight_decay=0.04)
    generator, step = torch.Generator().manual_seed(0), 0
    for epoch in range(4):
        order = torch.randperm(len(data), generator=generator).tolist()
        for i in range(0, len(data) - 31, 32):
            samples = [data[j] for j in order[i:i + 32]]
            x = torch.stack([method.multicrop(image, generator)[0] for image, _ in samples])
            net.train()
            loss = nn.functional.cross_entropy(head(net(x).pooled), torch.tensor([y for _, y in samples]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
        top1 = knn_top1(net.eval(), "shapes", size, device, normalization=norm)
        print(f"epoch {epoch + 1} (step {step}): cross-entropy {loss.item():.3f}, 20-NN {top1:.3f}", flush=True)


# -- trials ----------------------------------------------------------------------------------
def cifar_stem() -> None:
    """3x3 stride-1 first convolution and no max-pool (SimCLR, Chen et al. 2020, App. B.9): total stride 8."""
    build = resnet.ResNet.__init__

    def init(self, *args, **kwargs) -> None:
        build(self, *args, **kwargs)
        self.conv1 = nn.Conv2d(3, self.conv1.out_channels, 3, 1, 1, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.maxpool, self.patch_size = nn.Identity(), 8
    resnet.ResNet.__init__ = init


def avg_down() -> None:
    """ResNet-D shortcuts (He et al. 2019, "Bag of tricks", Sec. 4.1): 2x2 average before the 1x1 conv."""
    def init(self, width: int = 64, depths: tuple[int, ...] = (3, 4, 6, 3), drop_path_rate: float = 0.0) -> None:
        resnet.TimmResNet.__init__(self, resnet.Bottleneck, layers=tuple(depths), num_classes=0,
                                   channels=tuple(width * 2**i for i in range(len(depths))),
                                   drop_path_rate=drop_path_rate, zero_init_last=False, avg_down=True)
        self.embed_dim, self.patch_size = self.num_features, 2 ** (len(depths) + 1)
    resnet.ResNet.__init__ = init


def zero_init() -> None:
    """The last BatchNorm of each residual block starts at gamma 0, so every block starts as its
    shortcut (Goyal et al. 2017, Sec. 5.1; torchvision's `zero_init_residual`, timm's `zero_init_last`)."""
    build = resnet.ResNet.__init__

    def init(self, *args, **kwargs) -> None:
        build(self, *args, **kwargs)
        for block in self.residual_blocks:
            block.zero_init_last()
    resnet.ResNet.__init__ = init


def backbone_lr10() -> None:
    """The backbone's parameters at 10x the scheduled lr, the heads at 1x: Kaiming-initialised
    convolutions followed by BatchNorm are scale-invariant, so AdamW turns them by lr / |w| per
    step, 10-100x less than the transformers' truncated-normal layers at the same lr."""
    groups, schedules = trainer_module.decay_groups, trainer_module.Trainer._apply_schedules

    def split(named_params, no_weight_decay_names=()):
        named = list(named_params)
        out = []
        for scale, keep in ((10.0, lambda n: ".backbone." in f".{n}"), (1.0, lambda n: ".backbone." not in f".{n}")):
            for group in groups([(n, p) for n, p in named if keep(n)], no_weight_decay_names):
                out.append(dict(group, lr_scale=scale))
        return out

    def apply(self):
        lr, wd = schedules(self)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr, wd
    trainer_module.decay_groups, trainer_module.Trainer._apply_schedules = split, apply


def koleo_centred() -> None:
    """KoLeo on the batch-centred features: the random ResNet's rectified pooled features share one
    large component (mean pairwise cosine 0.89 on shapes; CvT's 0.04), which uncentred KoLeo can
    remove by shifting biases instead of telling the images apart."""
    plain = koleo_module.koleo_loss

    def centred(features: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
        return plain(features - features.mean(0, keepdim=True), eps)
    koleo_module.koleo_loss = centred


class LARS(torch.optim.Optimizer):
    """Momentum SGD whose step of each >= 2-d tensor is rescaled to eta |w| / |g + wd w| (You et al.
    2017); 1-d tensors (biases, norms) take plain momentum steps, as DINO's `--optimizer lars`."""

    def __init__(self, params, momentum: float = 0.9, eta: float = 0.001) -> None:
        super().__init__(params, dict(lr=0.0, momentum=momentum, eta=eta, weight_decay=0.0))

    @torch.no_grad()
    def step(self, closure=None) -> None:
        for group in self.param_groups:
            for p in (p for p in group["params"] if p.grad is not None):
                step = p.grad
                if p.ndim > 1:
                    step = step.add(p, alpha=group["weight_decay"])
                    w, s = p.norm(), step.norm()
                    step = step * torch.where((w > 0) & (s > 0), group["eta"] * w / s, torch.ones_like(w))
                buf = self.state[p].setdefault("momentum", torch.zeros_like(p))
                p.add_(buf.mul_(group["momentum"]).add_(step), alpha=-group["lr"])


def lars() -> None:
    """`optim.optimizer=sgd` builds LARS instead (the trainer sets lr and weight decay per step)."""
    build = trainer_module.build_optimizer

    def build_lars(groups, cfg, device, fused=None):
        if cfg.optimizer != "sgd":
            return build(groups, cfg, device, fused)
        return LARS([dict(g, weight_decay=0.0) for g in groups if g["params"]], momentum=cfg.momentum)
    trainer_module.build_optimizer = build_lars


def eval_teacher() -> None:
    """The teacher in eval mode, its BatchNorm statistics an EMA of the student's (DINO keeps it in
    training mode, normalising with its own batch statistics)."""
    build, after = ts.TeacherStudent.__init__, ts.TeacherStudent.after_optimizer_step

    def init(self, *args, **kwargs) -> None:
        build(self, *args, **kwargs)
        teacher = self.teacher
        teacher.train = lambda mode=True: nn.Module.train(teacher, False)
        teacher.eval()

    def after_step(self, ctx) -> None:
        after(self, ctx)
        m = self.teacher_momentum(ctx)
        with torch.no_grad():
            for (name, t), s in zip(self.teacher.named_buffers(), self.student.buffers()):
                if "running" in name:
                    t.mul_(m).add_(s, alpha=1 - m)
    ts.TeacherStudent.__init__, ts.TeacherStudent.after_optimizer_step = init, after_step


TRIALS = {"cifar_stem": cifar_stem, "avg_down": avg_down, "lars": lars, "eval_teacher": eval_teacher,
          "zero_init": zero_init, "backbone_lr10": backbone_lr10, "koleo_centred": koleo_centred}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(1)
    if len(argv) == 2 and argv[0] == "inspect":
        return inspect(argv[1])
    if len(argv) >= 2 and argv[0] == "spread":  # spread PRESET...
        return spread(argv[1:])
    if len(argv) >= 3 and argv[0] == "supervised":  # supervised PRESET LR [OVERRIDES...]
        return supervised(argv[1], float(argv[2]), argv[3:])
    if len(argv) >= 2 and argv[0] == "trial" and set(argv[1].split("+")) <= set(TRIALS):
        for name in argv[1].split("+"):  # NAME+NAME: several changes at once
            TRIALS[name]()
        return esvit_cpu_evidence.main(argv[2:])
    raise SystemExit(f"usage: inspect RUN | spread PRESET... | supervised PRESET LR [OVERRIDES...] | trial {{{','.join(TRIALS)}}}[+...] EVIDENCE-ARGS...\n{__doc__}")


if __name__ == "__main__":
    main()
