"""docs/adding-a-method.md holds: a method written in its own file (here, this test file), a preset
and one registry line are all a new method needs. A BYOL-like mean teacher, registered from outside
the package, runs end to end through the CLI: pre-training, k-NN evaluation, export to timm."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from helpers import tiny_overrides
from vitssl.augment import MultiCrop, MultiCropConfig, collate_views
from vitssl.backbones import BackboneConfig, create_backbone
from vitssl.cli import main
from vitssl.config import load_config, to_objects
from vitssl.engine.ema import TeacherEMA
from vitssl.engine.protocol import MethodBase, StepContext, StepOutput
from vitssl.methods import METHODS, build_method, method_configs, register_method

NAME = "mean-teacher"


@dataclass
class MeanTeacherConfig:
    name: str = NAME
    crops: MultiCropConfig = field(default_factory=lambda: MultiCropConfig(local_crops_number=0))
    dim: int = 32
    momentum: float = 0.99


class Projected(nn.Module):
    def __init__(self, backbone: nn.Module, dim: int) -> None:
        super().__init__()
        self.backbone, self.head = backbone, nn.Linear(backbone.embed_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x).pooled)


class MeanTeacher(MethodBase):
    """Student (with a predictor) regresses an EMA teacher's projection of the other view (BYOL's loss)."""

    Config = MeanTeacherConfig

    def __init__(self, cfg: MeanTeacherConfig, backbone: BackboneConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.student = Projected(create_backbone(backbone), cfg.dim)
        self.predictor = nn.Linear(cfg.dim, cfg.dim)
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)
        self.ema = TeacherEMA(self.teacher, self.student)
        self.crops = MultiCrop(cfg.crops)

    @classmethod
    def tiny_overrides(cls) -> tuple[str, ...]:
        return ("method.crops.global_crops_size=16", "method.dim=16")

    def train_transform(self):
        return self.crops

    def collate(self, samples):
        return collate_views(samples)

    def trainable_parameters(self):
        return ((n, p) for n, p in self.named_parameters() if p.requires_grad)

    def training_step(self, batch, ctx: StepContext) -> StepOutput:
        (a, b), _ = batch
        with torch.no_grad():
            targets = self.teacher(torch.cat([b, a]))
        predictions = self.predictor(self.student(torch.cat([a, b])))
        loss = 2 - 2 * F.cosine_similarity(predictions, targets, dim=-1).mean()
        return StepOutput(loss, {"teacher_agreement": 1 - loss.detach() / 2})

    def before_optimizer_step(self, ctx: StepContext) -> None:
        pass

    def after_optimizer_step(self, ctx: StepContext) -> None:
        self.ema.update(self.cfg.momentum)

    def evaluation_backbone(self) -> nn.Module:
        return self.teacher.backbone

    def student_backbone(self) -> nn.Module:
        return self.student.backbone


@pytest.fixture
def registered():
    register_method(NAME, MeanTeacher)
    yield
    del METHODS[NAME]


def test_a_method_registered_from_a_test_file_pretrains_evaluates_and_exports(registered, tmp_path, capsys):
    preset = tmp_path / "mean_teacher_vit_tiny.yaml"  # the new method's preset: the recipe, nothing else
    preset.write_text(yaml.safe_dump({"method": {"name": NAME, "momentum": 0.996},
                                      "backbone": {"name": "vit_tiny"}, "optim": {"lr": 1e-3}}))
    run = tmp_path / "run"
    assert main(["pretrain", "--config", str(preset), "--data", "digits", "--out", str(run),
                 *tiny_overrides("digits", method=NAME)[1:]]) == 0
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2] and all("teacher_agreement" in s for s in steps)

    assert main(["eval", "knn", "--checkpoint", str(run), "--train", "digits", "--val", "digits", "--ks", "5",
                 "--device", "cpu", "--num-workers", "0"]) == 0
    knn = json.loads((run / "eval_knn.json").read_text())
    assert knn["image_size"] == 16 and 0.1 < knn["results"]["5"]["top1"] <= 1.0  # 10 classes, chance 0.1

    assert main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "timm")]) == 0
    spec = json.loads((tmp_path / "timm" / "timm_model.json").read_text())
    assert spec["method"] == NAME and (tmp_path / "timm" / spec["file"]).is_file()


def test_registration_refuses_a_taken_name_and_a_class_that_is_not_a_method():
    with pytest.raises(ValueError, match="already registered"):
        register_method("dino", MeanTeacher)
    with pytest.raises(TypeError, match="MethodBase"):
        register_method("plain", nn.Linear)
    with pytest.raises(ValueError, match="Config.name defaults to 'mean-teacher'"):
        register_method("other-name", MeanTeacher)
    assert NAME not in METHODS


def test_the_defaults_serve_a_method_that_overrides_nothing_optional(registered):
    """MethodBase's defaults: a synthetic batch made by the method's own transform and collate,
    evaluation at the backbone's size with ImageNet statistics, no device-side augmentation."""
    objs = to_objects(load_config(None, [f"method.name={NAME}", *tiny_overrides(method=NAME)], method_configs()))
    method = build_method(objs.method, objs.backbone)
    views, labels = method.synthetic_batch(3, torch.Generator().manual_seed(0))
    assert [tuple(v.shape) for v in views] == [(3, 3, 16, 16)] * 2 and labels.shape == (3,)
    out = method.training_step((views, labels), StepContext(step=0, epoch=0, steps_per_epoch=1, total_steps=1,
                                                           epochs=1))
    assert torch.isfinite(out.loss)
    ev = MeanTeacher.evaluation_input(objs.method, objs.backbone)
    assert (ev.image_size, ev.mean, ev.std) == (16, None, None) and method.device_transform() is None
    assert method.backbone_network() is method.evaluation_backbone()
