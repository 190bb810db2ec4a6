"""`vitssl import`: checkpoints of the original repositories as vitssl checkpoints.

Each original layout (facebookresearch/dino, microsoft/esvit, alinlab/SelfPatch, wangsr126/mae-lite; key names read from the reference code) is
renamed onto a vitssl method's state dict, the backbone and head sizes are read off the
tensor shapes, and the result is written as a vitssl checkpoint (config + method state), so
`vitssl eval ... --checkpoint OUT` evaluates it and `init_from=OUT` continues pre-training.

| source | file | backbone | heads and state |
|---|---|---|---|
| dino | `student`/`teacher` (`module.`, `backbone.`, `head.`), or a bare backbone | ViT (timm names) | `head` -> head; `dino_loss.center` |
| esvit | `student`/`teacher` (`module.`), Swin/CvT at the top level, ResNet under `backbone.backbone.` (`convert_esvit_backbones`) | Swin: `layers.i.downsample` -> `layers.i+1.downsample` (timm puts merging first) | `head`, `head_dense` -> region_head; `center`, `center_grid` |
| selfpatch | `student`/`teacher` (`module.`, `backbone.`) | CLS-free ViT | `ca_head` -> aggregator (`cls_token` -> query, k and v fused into kv), `c_head` -> image_head, `p_head` -> patch_head; `center`, `patch_center` |
| mae-lite | `model` (`module.model.`), or a bare encoder | ViT, sin-cos positions | decoder_* -> decoder |

What the original does not hold (the region head of a view-only EsViT run, the heads of a
bare backbone) keeps its fresh initialisation and is listed; anything that does not fit the
inferred architecture is refused with the keys named. Attention head counts are not in the
weights: they come from the original `args.arch` when present, else the standard size for the
width (MAE-Lite: 12), else `backbone.num_heads=H`.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from omegaconf import DictConfig

from vitssl.commands.convert_esvit_backbones import esvit_backbone_layout
from vitssl.config import load_config, save_config, to_container, to_objects
from vitssl.engine.checkpoint import (
    CheckpointError,
    load_partial_state,
    read_failure,
    save_checkpoint,
)
from vitssl.engine.outputs import OutputError, check_output_dir, check_output_file
from vitssl.methods import build_method, method_configs

SOURCES = ("dino", "esvit", "selfpatch", "mae-lite")
State = dict[str, torch.Tensor]

_VIT_NAMES = {192: "vit_tiny", 384: "vit_small", 768: "vit_base"}
_VIT_HEADS = {192: 3, 384: 6, 768: 12}
_ARCH_HEADS = {"vit_tiny": 3, "deit_tiny": 3, "vit_small": 6, "deit_small": 6, "vit_base": 12}
_SWIN_NAMES = {(96, (2, 2, 6, 2)): "swin_tiny", (96, (2, 2, 18, 2)): "swin_small", (128, (2, 2, 18, 2)): "swin_base"}


class _Inert:
    """Stands in for any non-tensor object in an original checkpoint's metadata (numpy scalars,
    paths, config nodes): accepts whatever the pickle passes and runs nothing."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Inert:
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def load_original(path: str | Path) -> dict[str, Any]:
    """Read an original checkpoint with `weights_only=True`, never running pickled code.

    DINO, EsViT and SelfPatch store their argparse `Namespace` under `args`. A Namespace only
    holds attributes, so it is allow-listed with `torch.serialization.safe_globals` (scoped to
    this call, not process-wide). Any other object the weights-only unpickler refuses is
    replaced by the inert `_Inert` stand-in under its own name: tensors load unchanged and
    the metadata we don't read is dropped, without importing or calling anything from the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"original checkpoint '{path}' does not exist: pass the .pth file you downloaded")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            try:
                payload = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as first:  # retried below with stand-ins for the refused globals
                try:
                    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
                except Exception:  # not a zip checkpoint at all: report the load's own failure
                    unsafe = []
                if not unsafe:
                    raise first
                with torch.serialization.safe_globals([(_Inert, name) for name in unsafe]):
                    payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, ...
        raise CheckpointError(f"original checkpoint '{path}' {read_failure(e, 'a checkpoint of the original code')}") from e
    if not isinstance(payload, dict):
        raise CheckpointError(f"original checkpoint '{path}' holds a {type(payload).__name__}, not a dict")
    return payload


def _tensors(d: Any) -> State:
    return {k: v for k, v in d.items() if isinstance(v, torch.Tensor)} if isinstance(d, dict) else {}


def _strip(state: State, *prefixes: str) -> State:
    """Remove any of `prefixes` from the front of every key, repeatedly (`module.model.x` -> `x`)."""
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if key.startswith(p):
                    key, changed = key[len(p):], True
        out[key] = value
    return out


def _sub(state: State, prefix: str) -> State:
    """Entries under `prefix`, with it removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _networks(raw: dict[str, Any]) -> tuple[State, State | None]:
    """(teacher, student) state dicts without `module.`; a bare state dict is the teacher only."""
    if "teacher" in raw:
        teacher = _strip(_tensors(raw["teacher"]), "module.")
        student = _strip(_tensors(raw.get("student")), "module.") or None
        return teacher, student
    return _strip(_tensors(raw.get("state_dict", raw)), "module."), None


def _arg(raw: dict[str, Any], name: str) -> Any:
    args = raw.get("args")
    return getattr(args, name, None) if isinstance(args, argparse.Namespace) else None


# -- shapes -> config ---------------------------------------------------------------------

def _count(state: State, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.match(k))})


def vit_overrides(backbone: State, raw: dict[str, Any], default_heads: dict[int, int]) -> list[str]:
    """Backbone config of a ViT state dict (timm/DINO names, no prefix)."""
    if "pos_embed" not in backbone or "patch_embed.proj.weight" not in backbone:
        raise CheckpointError("no ViT backbone found (pos_embed, patch_embed.proj.weight): is --from right?")
    dim, patch = backbone["pos_embed"].shape[-1], backbone["patch_embed.proj.weight"].shape[-1]
    tokens = backbone["pos_embed"].shape[1] - (1 if "cls_token" in backbone else 0)
    side = math.isqrt(tokens)
    heads = _ARCH_HEADS.get(str(_arg(raw, "arch")), default_heads.get(dim))
    depth = _count(backbone, r"blocks\.(\d+)\.")
    out = [f"backbone.name={_VIT_NAMES.get(dim, 'vit_small')}", f"backbone.embed_dim={dim}",
           f"backbone.depth={depth}", f"backbone.patch_size={patch}",
           f"backbone.img_size={side * patch}"]
    return out + ([f"backbone.num_heads={heads}"] if heads else [])


def swin_overrides(backbone: State) -> list[str]:
    """Backbone config of an EsViT Swin: sizes from shapes, windows and heads from the
    relative-position tables ((2W-1)^2 rows, one column per head)."""
    if "patch_embed.proj.weight" not in backbone or not any(".relative_position_bias_table" in k for k in backbone):
        raise CheckpointError("no Swin backbone found (patch_embed, relative_position_bias_table): is --from right?")
    dim, patch = backbone["patch_embed.proj.weight"].shape[0], backbone["patch_embed.proj.weight"].shape[-1]
    stages = _count(backbone, r"layers\.(\d+)\.blocks\.")
    depths = tuple(_count(backbone, rf"layers\.{s}\.blocks\.(\d+)\.") for s in range(stages))
    tables = [backbone[f"layers.{s}.blocks.0.attn.relative_position_bias_table"] for s in range(stages)]
    windows = [(math.isqrt(t.shape[0]) + 1) // 2 for t in tables]
    window = max(windows)
    # a stage whose grid is smaller than the window attends globally: its window is its grid
    clamped = [s for s, w in enumerate(windows) if w < window]
    img_size = windows[clamped[0]] * 2 ** clamped[0] * patch if clamped else 224
    name = _SWIN_NAMES.get((dim, depths))
    out = [f"backbone.window_size={window}", f"backbone.img_size={img_size}", "backbone.mask_padding=false",
           f"backbone.patch_size={patch}"]
    if name:
        return [f"backbone.name={name}", *out]
    if len(set(depths)) != 1:
        raise CheckpointError(f"Swin stage depths {depths} with width {dim} are not a vitssl Swin: "
                              "use Swin-T/S/B or equal depths per stage")
    return ["backbone.name=swin_tiny", f"backbone.embed_dim={dim}", f"backbone.depth={depths[0]}",
            f"backbone.num_heads={tables[0].shape[1]}", *out]


def head_overrides(head: State, key: str, norm_last_layer: Any = None) -> list[str]:
    """`method.<key>.*` sizes of a DINO head state dict (`mlp.*`, `last_layer.weight_g/_v`)."""
    if "last_layer.weight_v" not in head:
        return []
    linears = sorted(int(m.group(1)) for k, v in head.items() if (m := re.match(r"mlp\.(\d+)\.weight$", k)) and v.ndim == 2)
    first, last = head[f"mlp.{linears[0]}.weight"], head[f"mlp.{linears[-1]}.weight"]
    use_bn = any(k.endswith("running_mean") for k in head)
    if norm_last_layer is None:  # a frozen magnitude stays exactly 1
        norm_last_layer = bool(torch.all(head["last_layer.weight_g"] == 1))
    return [f"method.{key}.out_dim={head['last_layer.weight_v'].shape[0]}",
            f"method.{key}.hidden_dim={first.shape[0] if len(linears) > 1 else 2048}",
            f"method.{key}.bottleneck_dim={last.shape[0]}", f"method.{key}.nlayers={len(linears)}",
            f"method.{key}.use_bn={str(use_bn).lower()}", f"method.{key}.norm_last_layer={str(bool(norm_last_layer)).lower()}"]


# -- key renaming -------------------------------------------------------------------------

def rename_head(head: State, prefix: str) -> State:
    """DINO head -> vitssl DINOHead: weight norm's old `weight_g`/`weight_v` -> parametrization."""
    names = {"last_layer.weight_g": "last_layer.parametrizations.weight.original0",
             "last_layer.weight_v": "last_layer.parametrizations.weight.original1",
             "mlp.weight": "mlp.0.weight", "mlp.bias": "mlp.0.bias"}  # nlayers=1: a bare Linear
    return {prefix + names.get(k, k): v for k, v in head.items()}


def rename_swin(backbone: State) -> State:
    """EsViT Swin -> timm Swin: patch merging moves from the end of stage i to the start of i+1;
    the relative-position index (a constant buffer) is dropped."""
    out = {}
    for k, v in backbone.items():
        if k.endswith(("relative_position_index", "attn_mask")):
            continue
        m = re.match(r"layers\.(\d+)\.downsample\.(.*)", k)
        out[f"layers.{int(m.group(1)) + 1}.downsample.{m.group(2)}" if m else k] = v
    return out


def rename_aggregator(ca_head: State) -> State:
    """SelfPatch `ca_head` -> PatchAggregator: separate k and v Linears fuse into `kv` ([k; v])."""
    out = {}
    for k, v in ca_head.items():
        if k == "cls_token":
            out["query"] = v
        elif re.search(r"\.attn\.v\.(weight|bias)$", k):
            continue
        elif m := re.match(r"cls_blocks\.(\d+)\.attn\.k\.(weight|bias)$", k):
            i, kind = m.groups()
            value = ca_head.get(f"cls_blocks.{i}.attn.v.{kind}")
            out[f"blocks.{i}.attn.kv.{kind}"] = v if value is None else torch.cat([v, value])
        else:
            out[k.replace("cls_blocks.", "blocks.", 1)] = v
    return out


def _both(net: Callable[[State], State], teacher: State, student: State | None) -> State:
    """`teacher.*` and `student.*` entries; a checkpoint with one network fills both with it."""
    t = net(teacher)
    s = net(student) if student is not None else t
    return {**{f"teacher.{k}": v for k, v in t.items()}, **{f"student.{k}": v for k, v in s.items()}}


# -- one function per source: raw checkpoint -> (method state, config overrides, dropped) ---

Converted = tuple[State, list[str], list[str]]


def _split(state: State, keep: Callable[[str], bool]) -> tuple[State, list[str]]:
    return {k: v for k, v in state.items() if keep(k)}, [k for k in state if not keep(k)]


def convert_dino(raw: dict[str, Any]) -> Converted:
    teacher, student = _networks(raw)
    if not any(k.startswith("backbone.") for k in teacher):  # a bare backbone (the hub weights)
        teacher, student = {f"backbone.{k}": v for k, v in _strip(teacher, "backbone.").items()}, None
    backbone = _sub(teacher, "backbone.")

    def net(d: State) -> State:
        return {**{f"backbone.{k}": v for k, v in _sub(d, "backbone.").items()}, **rename_head(_sub(d, "head."), "head.")}

    state = _both(net, teacher, student)
    dropped = [k for k in teacher if not k.startswith(("backbone.", "head."))]
    center = _tensors(raw.get("dino_loss")).get("center")
    if center is not None:
        state["loss.center.center"] = center
    overrides = ["method.name=dino", *vit_overrides(backbone, raw, _VIT_HEADS),
                 *head_overrides(_sub(student or teacher, "head."), "head", _arg(raw, "norm_last_layer"))]
    return state, overrides, dropped


def convert_esvit(raw: dict[str, Any]) -> Converted:
    teacher, student = _networks(raw)
    layout = esvit_backbone_layout(teacher)  # CvT or ResNet; None: Swin or ViT
    if layout is None and any(k.startswith("backbone.") for k in teacher):  # EsViT's ViT archs: DINO's wrapper
        state, overrides, dropped = convert_dino({**raw, "dino_loss": {}})
        overrides[0] = "method.name=esvit"
        dropped = [k for k in dropped if not k.startswith("head_dense.")]
        dense = lambda d: rename_head(_sub(d, "head_dense."), "region_head.")  # noqa: E731
    else:
        rename, shapes = layout or (rename_swin, swin_overrides)

        def net(d: State) -> State:
            body = {k: v for k, v in d.items() if not k.startswith(("head.", "head_dense."))}
            return {**{f"backbone.{k}": v for k, v in rename(body).items()},
                    **rename_head(_sub(d, "head."), "head.")}

        state = _both(net, teacher, student)
        dropped = [k for k in teacher if k.endswith(("relative_position_index", "attn_mask"))]
        overrides = ["method.name=esvit", *shapes(
            {k: v for k, v in teacher.items() if not k.startswith(("head.", "head_dense."))}),
            *head_overrides(_sub(student or teacher, "head."), "head", _arg(raw, "norm_last_layer"))]
        dense = lambda d: rename_head(_sub(d, "head_dense."), "region_head.")  # noqa: E731
    state.update(_both(dense, teacher, student))
    overrides += head_overrides(_sub(student or teacher, "head_dense."), "region_head", _arg(raw, "norm_last_layer"))
    loss = _tensors(raw.get("dino_loss"))
    for ours, theirs in (("loss.center.center", "center"), ("region_loss.center.center", "center_grid")):
        if theirs in loss:
            state[ours] = loss[theirs]
    return state, overrides, dropped


def convert_selfpatch(raw: dict[str, Any]) -> Converted:
    teacher, student = _networks(raw)

    def net(d: State) -> State:
        return {**{f"backbone.{k}": v for k, v in _sub(d, "backbone.").items()},
                **{f"aggregator.{k}": v for k, v in rename_aggregator(_sub(d, "ca_head.")).items()},
                **rename_head(_sub(d, "c_head."), "image_head."), **rename_head(_sub(d, "p_head."), "patch_head.")}

    state = _both(net, teacher, student)
    dropped = [k for k in teacher if not k.startswith(("backbone.", "ca_head.", "c_head.", "p_head."))]
    loss = _tensors(raw.get("dino_loss"))
    if "center" in loss:
        state["image_center.center"] = loss["center"].reshape(1, -1)
    if "patch_center" in loss:
        state["patch_loss.center.center"] = loss["patch_center"].reshape(1, -1)
    source = student or teacher
    aggregator_depth = _count(teacher, r"ca_head\.cls_blocks\.(\d+)\.")
    overrides = ["method.name=selfpatch", *vit_overrides(_sub(teacher, "backbone."), raw, _VIT_HEADS),
                 f"method.aggregator_depth={aggregator_depth}",
                 *head_overrides(_sub(source, "c_head."), "head", _arg(raw, "norm_last_layer")),
                 *head_overrides(_sub(source, "p_head."), "patch_head", _arg(raw, "norm_last_layer"))]
    return state, overrides, dropped


_MAE_DECODER = {"decoder_embed.": "decoder.embed.", "mask_token": "decoder.mask_token",
                "decoder_pos_embed": "decoder.pos_embed", "decoder_blocks.": "decoder.blocks.",
                "decoder_norm.": "decoder.norm.", "decoder_pred.": "decoder.pred."}


def convert_mae_lite(raw: dict[str, Any]) -> Converted:
    model = _strip(_tensors(raw.get("model", raw)), "module.", "model.", "encoder.")
    encoder_keys = ("cls_token", "pos_embed", "patch_embed.", "blocks.", "norm.")
    state, dropped = {}, []
    for k, v in model.items():
        theirs = next((p for p in _MAE_DECODER if k.startswith(p)), None)
        if theirs is not None:
            state[_MAE_DECODER[theirs] + k[len(theirs):]] = v
        elif k.startswith(encoder_keys):
            state[f"encoder.{k}"] = v
        else:
            dropped.append(k)  # a fine-tuned model's head / fc_norm
    encoder = _sub(state, "encoder.")
    overrides = ["method.name=mae", *vit_overrides(encoder, raw, {192: 12, 384: 12, 768: 12})]
    if "decoder.embed.weight" in state:
        width = state["decoder.embed.weight"].shape[0]
        depth = _count(state, r"decoder\.blocks\.(\d+)\.")
        overrides += [f"method.decoder.embed_dim={width}", f"method.decoder.num_heads={max(width // 32, 1)}",
                      f"method.decoder.depth={depth}"]
    return state, overrides, dropped


CONVERTERS: dict[str, Callable[[dict[str, Any]], Converted]] = {
    "dino": convert_dino, "esvit": convert_esvit, "selfpatch": convert_selfpatch, "mae-lite": convert_mae_lite,
}


# -- the command --------------------------------------------------------------------------

@dataclass
class ImportResult:
    """Where the imported checkpoint went and what did not come from the original."""

    path: Path
    config: DictConfig
    fresh: list[str] = field(default_factory=list)  # method keys left at their initialisation
    dropped: list[str] = field(default_factory=list)  # original keys with no vitssl counterpart


def convert_checkpoint(source: str, raw: dict[str, Any],
                       overrides: Sequence[str] = ()) -> tuple[DictConfig, State, list[str], list[str]]:
    """(config, full method state, fresh keys, dropped keys) for an original checkpoint dict.

    `overrides` (dotted key=value) win over what is read off the shapes. Keys that don't fit
    the model raise `CheckpointError` naming them; a backbone left partly fresh is refused too.
    """
    if source not in CONVERTERS:
        raise ValueError(f"unknown source '{source}': choose one of {', '.join(SOURCES)}")
    state, inferred, dropped = CONVERTERS[source](raw)
    cfg = load_config(None, [*inferred, *overrides], method_configs())
    objs = to_objects(cfg)
    method = build_method(objs.method, objs.backbone)
    fresh = load_partial_state(method, state, f"{source} (as {objs.backbone.name})")
    backbone_fresh = [k for k in fresh if k.startswith(("teacher.backbone.", "student.backbone.", "encoder."))]
    if backbone_fresh:
        raise CheckpointError(f"{source} checkpoint lacks backbone weights ({', '.join(backbone_fresh[:3])}): "
                              "it is of another architecture, or pass the right --from")
    return cfg, method.state_dict(), fresh, dropped


def import_checkpoint(source: str, checkpoint: str | Path, out: str | Path,
                      overrides: Sequence[str] = (), overwrite: bool = True) -> ImportResult:
    """Convert `checkpoint` and write it as a vitssl checkpoint: `out` ending in .pt/.pth is
    the file; anything else is a run folder that gets `checkpoint.pt` and `config.yaml`.

    `overwrite=False` (the CLI's default) refuses an existing file or run; a folder holding a
    training run (step or epoch checkpoints) is refused either way: the two would mix."""
    from vitssl.engine.trainer import CHECKPOINT_FORMAT

    out = Path(out)
    path = out if out.suffix in (".pt", ".pth") else out / "checkpoint.pt"
    check_import_target(out, overwrite)
    cfg, state, fresh, dropped = convert_checkpoint(source, load_original(checkpoint), list(overrides))
    payload = {"format": CHECKPOINT_FORMAT, "config": to_container(cfg), "method": state,
               "imported_from": {"source": source, "file": str(checkpoint), "fresh": fresh, "dropped": dropped}}
    save_checkpoint(payload, path)
    if path.parent == out:
        save_config(cfg, out / "config.yaml")
    return ImportResult(path, cfg, fresh, dropped)


def check_import_target(out: Path, overwrite: bool) -> None:
    """Refuse, before any work, an `--out` that cannot or may not take the imported checkpoint."""
    from vitssl.commands.run_folder import is_vitssl_run

    if out.suffix in (".pt", ".pth"):
        check_output_file(out, overwrite)
        return
    check_output_dir(out, overwrite=True)  # a folder, writable
    if out.is_dir() and any(out.iterdir()) and not is_vitssl_run(out):
        raise OutputError(f"--out '{out}' is not empty and is not a vitssl run: import into a new or empty folder, "
                          "so nothing of yours is overwritten")
    training = sorted(p.name for p in [*out.glob("checkpoint-step*.pt"), *out.glob("checkpoint_epoch*.pt")])
    if training:
        raise OutputError(f"--out '{out}' holds a training run ({training[0]}): an import over it would mix the "
                          "two runs; import into a new folder")
    check_output_dir(out, overwrite, ("checkpoint.pt", "config.yaml"))
