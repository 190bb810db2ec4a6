"""Layer-representation similarity: mini-batch linear CKA (MAE-Lite paper, layer and attention analyses; wangsr126/mae-lite projects/eval_tools/, MAE-Lite's heat-maps).

Kornblith et al.'s CKA compares two representations of the same examples through their Gram
matrices. Whole data sets do not fit in one Gram matrix, so Nguyen, Raghu and Kornblith (2021)
sum the *unbiased* HSIC estimator over mini-batches:

    CKA(K, L) = Σ_b HSIC₁(K_b, L_b) / sqrt(Σ_b HSIC₁(K_b, K_b) · Σ_b HSIC₁(L_b, L_b))

with linear kernels K = X Xᵀ on flattened features. Unlike the biased estimator, this one
goes to 0 for independent representations however wide they are, so many batches give a
consistent estimate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from torch import nn


def _grams(feats: Sequence[torch.Tensor]) -> torch.Tensor:
    """(L, n, n) linear-kernel Gram matrices in float64, diagonals zeroed (HSIC₁ needs K̃)."""
    n = feats[0].shape[0]
    if n < 4:
        raise ValueError(f"unbiased HSIC needs at least 4 examples per batch, got {n}: use a larger batch size")
    grams = []
    for f in feats:
        if f.shape[0] != n:
            raise ValueError(f"all layers must hold the same {n} examples, got a layer with {f.shape[0]}")
        x = f.detach().reshape(n, -1).double()
        grams.append(x @ x.T)
    k = torch.stack(grams)
    k.diagonal(dim1=-2, dim2=-1).zero_()
    return k


def hsic1(ka: torch.Tensor, kb: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC between every pair of (La, n, n) and (Lb, n, n) zero-diagonal Grams -> (La, Lb).

    HSIC₁ = [tr(K̃L̃) + 1ᵀK̃1 · 1ᵀL̃1 / ((n-1)(n-2)) - 2/(n-2) · 1ᵀK̃L̃1] / (n(n-3)),
    using that the Grams are symmetric: tr(K̃L̃) = Σ K̃∘L̃ and 1ᵀK̃L̃1 = (K̃1)·(L̃1).
    """
    n = ka.shape[-1]
    trace = torch.einsum("aij,bij->ab", ka, kb)
    sums = ka.sum(dim=(1, 2))[:, None] * kb.sum(dim=(1, 2))[None, :]
    rows = ka.sum(dim=2) @ kb.sum(dim=2).T
    return (trace + sums / ((n - 1) * (n - 2)) - 2 * rows / (n - 2)) / (n * (n - 3))


class MinibatchCKA:
    """Accumulates an (La × Lb) CKA matrix between the layers of two models over mini-batches."""

    def __init__(self) -> None:
        self.cross: torch.Tensor | None = None  # Σ HSIC₁(K_i, L_j), (La, Lb)
        self.self_a: torch.Tensor | None = None  # Σ HSIC₁(K_i, K_i), (La,)
        self.self_b: torch.Tensor | None = None  # Σ HSIC₁(L_j, L_j), (Lb,)
        self.batches = 0

    def update(self, feats_a: Sequence[torch.Tensor], feats_b: Sequence[torch.Tensor] | None = None) -> None:
        """Add one batch: per layer (B, F_i) features of the same B examples; `feats_b=None`
        compares model A with itself."""
        ka = _grams(feats_a)
        kb = ka if feats_b is None else _grams(feats_b)
        if ka.shape[-1] != kb.shape[-1]:
            raise ValueError(f"models saw different batches ({ka.shape[-1]} vs {kb.shape[-1]} examples): "
                             "feed both the same images")
        cross = hsic1(ka, kb)
        self_a = _self_hsic(ka)
        self_b = self_a.clone() if feats_b is None else _self_hsic(kb)
        if self.cross is None:
            self.cross, self.self_a, self.self_b = cross, self_a, self_b
        elif self.cross.shape != cross.shape:
            raise ValueError(f"layer counts changed between batches: {tuple(self.cross.shape)} "
                             f"then {tuple(cross.shape)}")
        else:
            self.cross += cross
            self.self_a += self_a
            self.self_b += self_b
        self.batches += 1

    def compute(self) -> torch.Tensor:
        """(La, Lb) float32 CKA matrix."""
        if self.cross is None:
            raise RuntimeError("no batches yet: call update(feats_a, feats_b) before compute()")
        denom = (self.self_a[:, None] * self.self_b[None, :]).clamp_min(0).sqrt()
        return (self.cross / denom).float().cpu()


def _self_hsic(k: torch.Tensor) -> torch.Tensor:
    """HSIC₁(K_i, K_i) for each layer i -> (L,), without the cross terms."""
    n = k.shape[-1]
    trace = (k * k).sum(dim=(1, 2))
    total = k.sum(dim=(1, 2))
    rows = k.sum(dim=2)
    return (trace + total**2 / ((n - 1) * (n - 2)) - 2 * (rows * rows).sum(dim=1) / (n - 2)) / (n * (n - 3))


def _final_norm(vit: nn.Module) -> nn.Module:
    """The norm a ViT ends with: `norm`, or per-token `fc_norm` for pooled (CLS-free) models."""
    norm, fc_norm = getattr(vit, "norm", None), getattr(vit, "fc_norm", None)
    if isinstance(norm, nn.Identity) and isinstance(fc_norm, nn.Module):
        return fc_norm
    return norm if norm is not None else nn.Identity()


@torch.no_grad()
def layer_features(vit: nn.Module, images: torch.Tensor, drop_prefix: bool = True) -> list[torch.Tensor]:
    """depth + 1 flattened (B, N*D) representations of (B, 3, H, W) images (MAE-Lite paper, layer and attention analyses; wangsr126/mae-lite projects/eval_tools/).

    Layer i < depth is block i's first LayerNorm applied to its input (`blocks[i].norm1`); the
    last is the final block's output through the final norm (`fc_norm`, per token, for
    global-pool models, as MAE-Lite does). `drop_prefix` keeps only the patch tokens, as the
    reference does, so models with and without a CLS token compare over the same tokens.
    """
    captured: dict[int, torch.Tensor] = {}
    hooks = [block.norm1.register_forward_hook(_store_output(captured, i)) for i, block in enumerate(vit.blocks)]
    hooks.append(vit.blocks[-1].register_forward_hook(_store_output(captured, len(vit.blocks))))
    try:
        vit(images)
    finally:
        for hook in hooks:
            hook.remove()
    captured[len(vit.blocks)] = _final_norm(vit)(captured[len(vit.blocks)])
    prefix = getattr(vit, "num_prefix_tokens", 0) if drop_prefix else 0
    return [captured[i][:, prefix:].flatten(1) for i in range(len(vit.blocks) + 1)]


def _store_output(store: dict[int, torch.Tensor], key: int) -> Callable[..., None]:
    """Forward hook writing a module's output into `store[key]`."""
    def hook(module: nn.Module, args: object, output: torch.Tensor) -> None:
        store[key] = output
    return hook


@torch.no_grad()
def cka_matrix(vit_a: nn.Module, vit_b: nn.Module, batches: Iterable, device: torch.device | str = "cpu",
               drop_prefix: bool = True) -> torch.Tensor:
    """(depth_a + 1, depth_b + 1) CKA between two ViTs' layers over image batches (or (images, labels))."""
    cka = MinibatchCKA()
    vit_a, vit_b = vit_a.eval(), vit_b.eval()
    images_seen = 0
    for batch in batches:
        images = (batch[0] if isinstance(batch, (tuple, list)) else batch).to(device)
        cka.update(layer_features(vit_a, images, drop_prefix), layer_features(vit_b, images, drop_prefix))
        images_seen += len(images)
    warn_if_few_samples("linear CKA", images_seen, min(vit_a.embed_dim, vit_b.embed_dim))
    return cka.compute()


def few_samples_message(what: str, images: int, width: int) -> str | None:
    """A warning when a statistic over `images` examples of `width`-wide features rests on fewer
    examples than dimensions: with n < width, n points span only an n-dimensional subspace, so
    layer similarities crowd towards 1 and per-head averages are noisy."""
    if images >= width:
        return None
    effect = "CKA reads high between any layers" if "CKA" in what else "per-head averages are noisy"
    return (f"{what} from {images} images, fewer than the feature width {width}: not reliable ({effect}); "
            f"use at least {width} images (--limit)")


def warn_if_few_samples(what: str, images: int, width: int) -> None:
    from vitssl.engine.logging import log

    message = few_samples_message(what, images, width)
    if message:
        log.warning(message)


def cka_heatmap(matrix: torch.Tensor, path: str | Path, labels: tuple[str, str] = ("model A", "model B"),
                title: str | None = None) -> Path:
    """PNG heat-map of an (La, Lb) CKA matrix: rows (model A) upwards, columns (model B) rightwards."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = torch.as_tensor(matrix).float().cpu().numpy()
    fig, ax = plt.subplots(figsize=(4.6, 4), dpi=120)
    image = ax.imshow(m, origin="lower", cmap="magma", vmin=0.0, vmax=1.0)
    ax.set_ylabel(f"layer of {labels[0]}")
    ax.set_xlabel(f"layer of {labels[1]}")
    if title:
        ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="linear CKA")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
