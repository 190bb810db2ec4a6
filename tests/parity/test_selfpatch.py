"""SelfPatch's losses, centers, neighbour tables and aggregation head against the original's outputs.

tests/fixtures/parity/selfpatch_loss.npz: `main_selfpatch.DINOLoss` called twice on the same
object (epochs 5 and 40; B = 4, K = 64, patch-head width 32, 16 / 4 tokens per global / local
view) and `SelfPatchHead(16, num_heads=2, k_num=4)` with its saved weights on 14x14 and 6x6 grids.

Deliberate deviation: vitssl's default `method.neighbour_border="inside"` gives border patches
only in-image neighbours; the original's tables wrap around the edges, which is vitssl's
`neighbour_border="wrap"` option (docs/methods/selfpatch.md). The tables are checked with `wrap`.
The losses compute in float32 (rtol 1e-5); the aggregation head also runs in float64 (rtol 1e-10).
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from vitssl.heads.patch_aggregator import PatchAggregator
from vitssl.losses.center import Center
from vitssl.losses.selfpatch import (
    PatchLoss,
    aggregate_positives,
    image_level_loss,
    neighbour_indices,
    select_positives,
)
from vitssl.methods.selfpatch import SelfPatchConfig

GOLDEN = np.load(Path(__file__).resolve().parents[1] / "fixtures" / "parity" / "selfpatch_loss.npz")
FP32 = dict(rtol=1e-5, atol=1e-7, check_dtype=False)
B, K, KP = int(GOLDEN["batch"]), int(GOLDEN["out_dim"]), int(GOLDEN["out_dim_selfpatch"])
GRIDS = {"global": ((14, 14), "loc224"), "local": ((6, 6), "loc96")}


def golden(name: str) -> torch.Tensor:
    return torch.from_numpy(GOLDEN[name])


def views(call: int, who: str, part: str, width: int) -> list[torch.Tensor]:
    """The original's (global, local) rows, view-major -> vitssl's per-resolution (2, B, ..., width)."""
    return [golden(f"{who}_{part}_{kind}_{call}").float().reshape(2, B, -1, width) for kind in ("global", "local")]


def test_the_default_config_is_the_originals_objective():
    cfg = SelfPatchConfig()
    assert cfg.patch_loss_weight == float(GOLDEN["patch_loss_weight"])
    assert cfg.num_neighbours == int(GOLDEN["k_num"])
    assert cfg.teacher_local_views and cfg.image_center_views == "all"


def test_image_and_patch_loss_and_both_centers_over_two_calls():
    """Call 2 starts from the centers our own call 1 left. The teacher's local-view cls outputs
    are no target but enter the image center; the total is assembled as `training_step` does."""
    cfg = SelfPatchConfig()
    student_temp, momentum = float(GOLDEN["student_temp"]), float(GOLDEN["center_momentum"])
    image_center, patch_loss = Center(K, momentum), PatchLoss(KP, student_temp, momentum)
    assert_close(image_center.center, golden("center_0").reshape(1, K), rtol=0, atol=0, check_dtype=False)
    assert_close(patch_loss.center.center, golden("patch_center_0"), rtol=0, atol=0, check_dtype=False)
    for call in (1, 2):
        temp = float(GOLDEN[f"teacher_temp_{call}"])
        s_image = torch.cat([v.squeeze(2) for v in views(call, "s", "cls", K)])  # (4, B, K)
        t_image = torch.cat([v.squeeze(2) for v in views(call, "t", "cls", K)])
        image, _ = image_level_loss(s_image, t_image, image_center, temp, student_temp, cfg.image_center_views)
        patch = patch_loss(views(call, "s", "patch", KP), views(call, "t", "patch", KP), temp)
        image_center.update()
        patch_loss.center.update()
        assert_close(image, golden(f"cls_loss_{call}"), **FP32)
        assert_close(patch, golden(f"patch_loss_{call}"), **FP32)
        assert_close(image + cfg.patch_loss_weight * patch, golden(f"loss_{call}"), **FP32)
        assert_close(image_center.center, golden(f"center_{call}").reshape(1, K), **FP32)
        assert_close(patch_loss.center.center, golden(f"patch_center_{call}"), **FP32)


@pytest.mark.parametrize("view", GRIDS)
def test_wrap_neighbour_tables_are_the_originals(view):
    """Same neighbour sets per patch (the original lists them ascending, vitssl by offset), all
    existing; with the default `inside` border only interior patches keep the original's set."""
    grid, table = GRIDS[view]
    expected = golden(table)
    index, valid = neighbour_indices(grid, "wrap")
    assert valid.all()
    assert torch.equal(index.sort(dim=1).values, expected)
    inside, inside_valid = neighbour_indices(grid, "inside")
    rows, cols = torch.arange(grid[0] * grid[1]) // grid[1], torch.arange(grid[0] * grid[1]) % grid[1]
    interior = (rows > 0) & (rows < grid[0] - 1) & (cols > 0) & (cols < grid[1] - 1)
    assert torch.equal(inside[interior].sort(dim=1).values, expected[interior])
    assert not inside_valid[~interior].all(dim=1).any()


@pytest.mark.parametrize("view", GRIDS)
def test_topk_neighbours_are_the_originals(view):
    """The original's `topk` are positions into its row of the table; map both to patch indices."""
    grid, table = GRIDS[view]
    x = golden(f"head_x_{view}")
    index, valid = neighbour_indices(grid, "wrap")
    positives, exists = select_positives(x, index, valid, int(GOLDEN["k_num"]))
    expected = torch.gather(golden(table).expand(x.shape[0], -1, -1), 2, golden(f"head_topk_{view}"))
    assert torch.equal(positives, expected)
    assert exists.all()


def original_head_as_aggregator(dtype: torch.dtype) -> PatchAggregator:
    """vitssl's module with `SelfPatchHead`'s saved weights: cls_token -> query, cls_blocks -> blocks,
    separate k and v projections -> one kv projection (k rows first)."""
    params = {k[len("head_param."):]: golden(k) for k in GOLDEN.files if k.startswith("head_param.")}
    depth = len({k.split(".")[1] for k in params if k.startswith("cls_blocks.")})
    dim = params["cls_token"].shape[-1]
    state = {"query": params.pop("cls_token")}
    for i in range(depth):
        old = f"cls_blocks.{i}.attn."
        for part in ("weight", "bias"):
            state[f"blocks.{i}.attn.kv.{part}"] = torch.cat([params.pop(old + f"k.{part}"), params.pop(old + f"v.{part}")])
    state.update({k.replace("cls_blocks.", "blocks."): v for k, v in params.items()})
    aggregator = PatchAggregator(dim, num_heads=2, depth=depth).to(dtype).eval()
    aggregator.load_state_dict(state, strict=True)
    return aggregator


@pytest.mark.parametrize("dtype, tol", [(torch.float64, dict(rtol=1e-10, atol=1e-12)),
                                        (torch.float32, dict(rtol=1e-5, atol=1e-6))])
@pytest.mark.parametrize("view", GRIDS)
def test_aggregation_head_outputs_with_and_without_neighbours(view, dtype, tol):
    """loc=False (student): [A(q0; X), LN(x_i)]; loc=True (teacher): [A(q0; X), A(q0; P_i)]."""
    grid, _ = GRIDS[view]
    aggregator = original_head_as_aggregator(dtype)
    x = golden(f"head_x_{view}").to(dtype)
    with torch.no_grad():
        image = aggregator(x).unsqueeze(1)
        without = torch.cat([image, aggregator.norm(x)], dim=1)
        with_neighbours = torch.cat([image, aggregate_positives(x, grid, aggregator, int(GOLDEN["k_num"]), "wrap")], 1)
    assert_close(without, golden(f"head_out_noloc_{view}"), check_dtype=False, **tol)
    assert_close(with_neighbours, golden(f"head_out_loc_{view}"), check_dtype=False, **tol)
