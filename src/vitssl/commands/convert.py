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

Pieces: `original_checkpoint` reads the file safely and takes it apart, `convert_shapes` reads
sizes off the tensors and renames keys, `convert_esvit_backbones` holds EsViT's CvT and ResNet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from omegaconf import DictConfig

from vitssl.commands.convert_esvit_backbones import esvit_backbone_layout
from vitssl.commands.convert_shapes import (
    VIT_HEADS,
    count_indices,
    head_overrides,
    rename_aggregator,
    rename_head,
    rename_swin,
    swin_overrides,
    vit_overrides,
)
from vitssl.commands.original_checkpoint import (
    State,
    load_original,
    networks,
    saved_arg,
    strip_prefixes,
    sub_state,
    tensors_of,
)
from vitssl.config import load_config, save_config, to_container, to_objects
from vitssl.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    load_partial_state,
    save_checkpoint,
)
from vitssl.engine.outputs import OutputError, check_output_dir, check_output_file
from vitssl.methods import build_method, method_configs

SOURCES = ("dino", "esvit", "selfpatch", "mae-lite")


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
    teacher, student = networks(raw)
    if not any(k.startswith("backbone.") for k in teacher):  # a bare backbone (the hub weights)
        teacher, student = {f"backbone.{k}": v for k, v in strip_prefixes(teacher, "backbone.").items()}, None
    backbone = sub_state(teacher, "backbone.")

    def net(d: State) -> State:
        return {**{f"backbone.{k}": v for k, v in sub_state(d, "backbone.").items()}, **rename_head(sub_state(d, "head."), "head.")}

    state = _both(net, teacher, student)
    dropped = [k for k in teacher if not k.startswith(("backbone.", "head."))]
    center = tensors_of(raw.get("dino_loss")).get("center")
    if center is not None:
        state["loss.center.center"] = center
    overrides = ["method.name=dino", *vit_overrides(backbone, raw, VIT_HEADS),
                 *head_overrides(sub_state(student or teacher, "head."), "head", saved_arg(raw, "norm_last_layer"))]
    return state, overrides, dropped


def convert_esvit(raw: dict[str, Any]) -> Converted:
    teacher, student = networks(raw)
    layout = esvit_backbone_layout(teacher)  # CvT or ResNet; None: Swin or ViT
    if layout is None and any(k.startswith("backbone.") for k in teacher):  # EsViT's ViT archs: DINO's wrapper
        state, overrides, dropped = convert_dino({**raw, "dino_loss": {}})
        overrides[0] = "method.name=esvit"
        dropped = [k for k in dropped if not k.startswith("head_dense.")]
        dense = lambda d: rename_head(sub_state(d, "head_dense."), "region_head.")  # noqa: E731
    else:
        rename, shapes = layout or (rename_swin, swin_overrides)

        def net(d: State) -> State:
            body = {k: v for k, v in d.items() if not k.startswith(("head.", "head_dense."))}
            return {**{f"backbone.{k}": v for k, v in rename(body).items()},
                    **rename_head(sub_state(d, "head."), "head.")}

        state = _both(net, teacher, student)
        dropped = [k for k in teacher if k.endswith(("relative_position_index", "attn_mask"))]
        overrides = ["method.name=esvit", *shapes(
            {k: v for k, v in teacher.items() if not k.startswith(("head.", "head_dense."))}),
            *head_overrides(sub_state(student or teacher, "head."), "head", saved_arg(raw, "norm_last_layer"))]
        dense = lambda d: rename_head(sub_state(d, "head_dense."), "region_head.")  # noqa: E731
    state.update(_both(dense, teacher, student))
    overrides += head_overrides(sub_state(student or teacher, "head_dense."), "region_head", saved_arg(raw, "norm_last_layer"))
    loss = tensors_of(raw.get("dino_loss"))
    for ours, theirs in (("loss.center.center", "center"), ("region_loss.center.center", "center_grid")):
        if theirs in loss:
            state[ours] = loss[theirs]
    return state, overrides, dropped


def convert_selfpatch(raw: dict[str, Any]) -> Converted:
    teacher, student = networks(raw)

    def net(d: State) -> State:
        return {**{f"backbone.{k}": v for k, v in sub_state(d, "backbone.").items()},
                **{f"aggregator.{k}": v for k, v in rename_aggregator(sub_state(d, "ca_head.")).items()},
                **rename_head(sub_state(d, "c_head."), "image_head."), **rename_head(sub_state(d, "p_head."), "patch_head.")}

    state = _both(net, teacher, student)
    dropped = [k for k in teacher if not k.startswith(("backbone.", "ca_head.", "c_head.", "p_head."))]
    loss = tensors_of(raw.get("dino_loss"))
    if "center" in loss:
        state["image_center.center"] = loss["center"].reshape(1, -1)
    if "patch_center" in loss:
        state["patch_loss.center.center"] = loss["patch_center"].reshape(1, -1)
    source = student or teacher
    aggregator_depth = count_indices(teacher, r"ca_head\.cls_blocks\.(\d+)\.")
    overrides = ["method.name=selfpatch", *vit_overrides(sub_state(teacher, "backbone."), raw, VIT_HEADS),
                 f"method.aggregator_depth={aggregator_depth}",
                 *head_overrides(sub_state(source, "c_head."), "head", saved_arg(raw, "norm_last_layer")),
                 *head_overrides(sub_state(source, "p_head."), "patch_head", saved_arg(raw, "norm_last_layer"))]
    return state, overrides, dropped


_MAE_DECODER = {"decoder_embed.": "decoder.embed.", "mask_token": "decoder.mask_token",
                "decoder_pos_embed": "decoder.pos_embed", "decoder_blocks.": "decoder.blocks.",
                "decoder_norm.": "decoder.norm.", "decoder_pred.": "decoder.pred."}


def convert_mae_lite(raw: dict[str, Any]) -> Converted:
    model = strip_prefixes(tensors_of(raw.get("model", raw)), "module.", "model.", "encoder.")
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
    encoder = sub_state(state, "encoder.")
    overrides = ["method.name=mae", *vit_overrides(encoder, raw, {192: 12, 384: 12, 768: 12})]
    if "decoder.embed.weight" in state:
        width = state["decoder.embed.weight"].shape[0]
        depth = count_indices(state, r"decoder\.blocks\.(\d+)\.")
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
