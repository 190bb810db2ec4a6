"""Detection: the shapes COCO set, COCO AP against hand-computed values, Mask R-CNN on ViT and
Swin backbones, and one-line errors for bad COCO files and backbones."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from detection_helpers import SWIN_TINY, tiny_run, write_coco
from torch import nn

from vitssl.backbones import create_backbone
from vitssl.cli import main
from vitssl.data.shapes_coco import write_shapes_coco
from vitssl.eval.detection import build_detector, coco_ap, load_coco, resolve_preset
from vitssl.eval.detection.coco import CocoDetection
from vitssl.eval.detection.pyramid import build_pyramid, pyramid_strides
from vitssl.eval.detection.train import detection_optimizer, evaluate_detector, train_detector

mask_api = pytest.importorskip("pycocotools.mask")


@pytest.fixture(scope="module")
def shapes_coco(tmp_path_factory) -> dict[str, str]:
    return write_shapes_coco(tmp_path_factory.mktemp("shapes_coco"), train_images=24, val_images=8)


def _vit():
    return create_backbone("vit_tiny", patch_size=8, img_size=64, embed_dim=32, depth=2, num_heads=2)


def _swin():
    return create_backbone("swin_tiny", img_size=64, embed_dim=16, depth=1, num_heads=1)


def _cvt():
    return create_backbone("cvt_tiny", embed_dim=8, depth=1, num_heads=1)


def _resnet():
    return create_backbone("resnet50", embed_dim=4, depth=1)


# ------------------------------------------------------------------------------------ data set

def test_shapes_coco_boxes_and_areas_match_the_masks_decoded_by_pycocotools(shapes_coco):
    coco = load_coco(shapes_coco["train"])
    assert coco.category_names == ["circle", "square", "triangle", "cross", "ring"]
    by_image: dict[int, np.ndarray] = {}
    for ann in coco.doc["annotations"]:
        m = mask_api.decode(mask_api.frPyObjects(ann["segmentation"], 64, 64))
        ys, xs = np.nonzero(m)
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert ann["area"] == m.sum() == mask_api.area(mask_api.frPyObjects(ann["segmentation"], 64, 64))
        seen = by_image.setdefault(ann["image_id"], np.zeros((64, 64), np.uint8))
        assert not (seen & m).any(), "instances of one image overlap"
        seen |= m
    assert len(coco.doc["annotations"]) > len(coco.doc["images"])  # several objects per image


def test_dataset_targets_are_xyxy_boxes_with_masks_of_the_image_size(shapes_coco):
    image, target = CocoDetection(load_coco(shapes_coco["val"]))[0]
    assert image.shape == (3, 64, 64) and 0 <= image.min() and image.max() <= 1
    boxes, masks = target["boxes"], target["masks"]
    assert masks.shape[1:] == (64, 64) and len(boxes) == len(masks) == len(target["labels"])
    for box, mask in zip(boxes, masks):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


# ------------------------------------------------------------------------------------- COCO AP

def _toy(tmp_path: Path) -> tuple[str, list[dict]]:
    """3 images of 40x40, one 10x10 square of category 7 each, at different places."""
    boxes = [[2, 2, 10, 10], [20, 5, 10, 10], [5, 25, 10, 10]]
    images = [{"id": i + 1, "file_name": f"{i}.png", "width": 40, "height": 40} for i in range(3)]
    anns = []
    for i, (x, y, w, h) in enumerate(boxes):
        m = np.zeros((40, 40), np.uint8)
        m[y:y + h, x:x + w] = 1
        rle = mask_api.encode(np.asfortranarray(m))
        rle["counts"] = rle["counts"].decode()
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 7, "bbox": [x, y, w, h], "area": 100,
                     "iscrowd": 0, "segmentation": rle})
    doc = {"images": images, "annotations": anns, "categories": [{"id": 7, "name": "square"}]}
    source = write_coco(tmp_path, doc, {im["file_name"]: (40, 40) for im in images})
    return source, anns


def test_perfect_predictions_score_ap_one(tmp_path):
    source, anns = _toy(tmp_path)
    entries = [{"image_id": a["image_id"], "category_id": 7, "bbox": a["bbox"], "score": 1.0,
                "segmentation": a["segmentation"]} for a in anns]
    ap = coco_ap(load_coco(source), entries)
    for iou_type in ("bbox", "segm"):
        assert ap[iou_type]["AP"] == pytest.approx(1.0) and ap[iou_type]["AP50"] == pytest.approx(1.0)
        assert ap[iou_type]["APs"] == pytest.approx(1.0) and ap[iou_type]["APl"] == -1  # 100 px: small


def test_a_false_positive_between_two_hits_gives_the_hand_computed_ap(tmp_path):
    # Image 2's square is never found. Ranked: hit (P 1, R 1/3), miss (P 1/2), hit (P 2/3, R 2/3).
    # Interpolated precision is 1 at the 34 recall points 0.00..0.33, 2/3 at the 33 points
    # 0.34..0.66 and 0 above: AP = (34 + 33 * 2/3) / 101 = 56/101 at every IoU threshold, as the
    # boxes that hit are exact.
    source, anns = _toy(tmp_path)
    entries = [{"image_id": 1, "category_id": 7, "bbox": anns[0]["bbox"], "score": 0.9},
               {"image_id": 2, "category_id": 7, "bbox": [0, 30, 8, 8], "score": 0.8},
               {"image_id": 3, "category_id": 7, "bbox": anns[2]["bbox"], "score": 0.7}]
    ap = coco_ap(load_coco(source), entries, ("bbox",))["bbox"]
    assert ap["AP"] == pytest.approx(56 / 101)
    assert ap["AP50"] == ap["AP75"] == pytest.approx(ap["AP"])


def test_no_prediction_scores_zero(tmp_path):
    source, _ = _toy(tmp_path)
    assert coco_ap(load_coco(source), [])["bbox"]["AP"] == 0.0


# ------------------------------------------------------------------------------- Mask R-CNN

@pytest.mark.parametrize("make", [_vit, _swin, _cvt, _resnet], ids=["vit", "swin", "cvt", "resnet"])
def test_mask_rcnn_forward_backward_reaches_the_backbone(make, shapes_coco):
    data = CocoDetection(load_coco(shapes_coco["train"]))
    torch.manual_seed(0)
    backbone = make()
    model = build_detector(backbone, 5, resolve_preset("tiny"))
    images, targets = zip(*(data[i] for i in range(2)))
    losses = model(list(images), list(targets))
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    first = next(p for n, p in backbone.named_parameters() if n.startswith(("patch_embed", "stages.0.embed", "conv1")))
    assert first.grad is not None and first.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model([images[0]])[0]
    assert out["masks"].shape[1:] == (1, 64, 64) and out["boxes"].shape[1] == 4


@pytest.mark.parametrize("make,pyramid", [(_vit, "simple"), (_vit, "blocks"), (_swin, "simple"), (_cvt, "simple"),
                                          (_resnet, "simple")], ids=["vit", "vit-blocks", "swin", "cvt", "resnet"])
def test_pyramid_levels_have_the_strides_they_state(make, pyramid):
    adapter = build_pyramid(make(), out_channels=16, pyramid=pyramid)
    out = adapter(torch.randn(2, 3, 64, 64))
    strides = pyramid_strides(adapter)
    assert list(out) == ["0", "1", "2", "3", "pool"]
    for level, stride in zip("0123", strides):
        assert out[level].shape == (2, 16, 64 // stride, 64 // stride)
    assert out["pool"].shape[-1] == out["3"].shape[-1] // 2 + out["3"].shape[-1] % 2


def test_layer_decay_scales_backbone_blocks_below_the_heads():
    preset = replace(resolve_preset("tiny"), layer_decay=0.5)
    model = build_detector(_vit(), 5, preset)
    scales = {n: g["lr_scale"] for g in detection_optimizer(model, preset).param_groups for n in g["param_names"]}
    assert scales["backbone.body.blocks.1.attn.qkv.weight"] == 0.5
    assert scales["backbone.body.blocks.0.attn.qkv.weight"] == 0.25
    assert scales["backbone.body.patch_embed.proj.weight"] == 0.125
    assert scales["roi_heads.box_predictor.cls_score.weight"] == 1.0


@pytest.mark.slow
def test_fine_tuning_raises_ap_over_the_untrained_detector(shapes_coco):
    train, val = load_coco(shapes_coco["train"]), load_coco(shapes_coco["train"])  # fit the train images
    torch.manual_seed(0)
    preset = resolve_preset("tiny", epochs=25)
    model = build_detector(_vit(), 5, preset)
    before = evaluate_detector(model, val, torch.device("cpu"))["bbox"]["AP50"]
    after = train_detector(model, train, val, preset).metrics["bbox"]["AP50"]
    assert after > before + 0.01, (before, after)  # measured: 0.0 -> 0.026 in 75 steps from random weights


# ------------------------------------------------------------------------------- bad input

def _break(doc: dict, how: str) -> dict:
    doc = copy.deepcopy(doc)
    if how == "no images":
        del doc["images"]
    elif how == "empty categories":
        doc["categories"] = []
    elif how == "box outside":
        doc["annotations"][1]["bbox"] = [35, 5, 10, 10]
    elif how == "unknown image":
        doc["annotations"][1]["image_id"] = 99
    elif how == "unknown category":
        doc["annotations"][1]["category_id"] = 3
    elif how == "mask size":
        doc["annotations"][1]["segmentation"]["size"] = [20, 40]
    elif how == "zero box":
        doc["annotations"][1]["bbox"] = [5, 5, 0, 10]
    return doc


@pytest.mark.parametrize("how,expected", [
    ("no images", "has no 'images' list"), ("empty categories", "has empty 'categories'"),
    ("box outside", "annotation id 2 bbox [35, 5, 10, 10] lies outside its image (40x40)"),
    ("unknown image", "annotation id 2 names image_id 99, which is not in images"),
    ("unknown category", "annotation id 2 has category_id 3, which is not in categories"),
    ("mask size", "annotation id 2 mask size [20, 40] does not match its image"),
    ("zero box", "annotation id 2 bbox [5, 5, 0, 10] has no area"),
])
def test_malformed_coco_files_fail_in_one_line_naming_file_and_entry(tmp_path, how, expected):
    source, _ = _toy(tmp_path)
    path = Path(source.split(":")[0])
    path.write_text(json.dumps(_break(json.loads(path.read_text()), how)))
    with pytest.raises(ValueError) as err:
        load_coco(source)
    assert expected in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_an_image_whose_size_differs_from_its_entry_is_named(tmp_path):
    source, _ = _toy(tmp_path)
    from PIL import Image

    Image.new("RGB", (30, 40)).save(Path(source.split(":")[1]) / "1.png")
    with pytest.raises(ValueError, match=r"image id 2: '1.png' is 30x40 but the file says 40x40"):
        CocoDetection(load_coco(source))[1]


def test_a_missing_image_file_and_a_bad_source_are_named(tmp_path):
    source, _ = _toy(tmp_path)
    (Path(source.split(":")[1]) / "2.png").unlink()
    with pytest.raises(FileNotFoundError, match="image id 3: file .*2.png' does not exist"):
        load_coco(source)
    with pytest.raises(ValueError, match="is not COCO_JSON:IMAGES"):
        load_coco(str(tmp_path / "ann.json"))
    (tmp_path / "ann.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_coco(source)


def test_a_backbone_without_an_adapter_is_refused_in_one_line():
    with pytest.raises(ValueError, match="cannot adapt a Linear backbone to a feature pyramid"):
        build_pyramid(nn.Linear(3, 3))


# ------------------------------------------------------------------------------------- command

def test_cli_fine_tunes_and_writes_box_and_mask_ap(tmp_path, shapes_coco, capsys):
    run = tiny_run(tmp_path / "run", SWIN_TINY, method="esvit")
    argv = ["eval", "detection", "--checkpoint", str(run), "--train", shapes_coco["train"], "--val",
            shapes_coco["val"], "--iters", "2", "--device", "cpu"]
    assert main(argv) == 0
    result = json.loads((run / "eval_detection.json").read_text())
    assert result["iterations"] == 2 and set(result["bbox"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert set(result["segm"]) == set(result["bbox"])
    assert main(argv) == 2
    assert "already exists: pass --overwrite" in capsys.readouterr().err


def test_cli_bad_inputs_are_one_line_errors(tmp_path, shapes_coco, capsys):
    run = tiny_run(tmp_path / "run")
    source, _ = _toy(tmp_path / "toy")
    path = Path(source.split(":")[0])
    path.write_text(json.dumps(_break(json.loads(path.read_text()), "box outside")))
    assert main(["eval", "detection", "--checkpoint", str(run), "--train", source, "--val", source]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vitssl: error: ") and "annotation id 2 bbox" in err and "\n" not in err
    assert main(["data", "shapes-coco", "--out", str(tmp_path / "d"), "--train-images", "2", "--val-images", "1"]) == 0
    assert main(["data", "shapes-coco", "--out", str(tmp_path / "d")]) == 2
    assert "pass --overwrite" in capsys.readouterr().err


def test_the_parser_names_every_preset_without_importing_torch():
    import subprocess
    import sys

    from vitssl.commands.detection import PRESET_NAMES
    from vitssl.eval.detection import PRESETS

    assert PRESET_NAMES == tuple(PRESETS)
    check = "import sys; from vitssl.cli import build_parser; build_parser(); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", check], check=True, timeout=120)
