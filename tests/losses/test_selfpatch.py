"""SelfPatch neighbour geometry, positive selection and patch loss, checked by hand."""

import math

import pytest
import torch

from vitssl.losses.selfpatch import PatchLoss, gather_positives, neighbour_indices, select_positives


def neighbours(grid, border, patch):
    index, valid = neighbour_indices(grid, border)
    return sorted(index[patch][valid[patch]].tolist())


# 4x4 grid, row-major:  0  1  2  3 /  4  5  6  7 /  8  9 10 11 / 12 13 14 15
@pytest.mark.parametrize("border,patch,expected", [
    ("inside", 5, [0, 1, 2, 4, 6, 8, 9, 10]),     # interior: the full 3x3 window
    ("wrap", 5, [0, 1, 2, 4, 6, 8, 9, 10]),
    ("inside", 1, [0, 2, 4, 5, 6]),               # top edge
    ("wrap", 1, [0, 2, 4, 5, 6, 12, 13, 14]),     # ... takes the bottom row
    ("inside", 0, [1, 4, 5]),                      # corner
    ("wrap", 0, [1, 3, 4, 5, 7, 12, 13, 15]),     # ... takes the three other corners' sides
    ("inside", 15, [10, 11, 14]),
    ("wrap", 15, [0, 2, 3, 8, 10, 11, 12, 14]),
    ("inside", 7, [2, 3, 6, 10, 11]),             # right edge
    ("wrap", 7, [0, 2, 3, 4, 6, 8, 10, 11]),
])
def test_neighbours_on_a_4x4_grid(border, patch, expected):
    assert neighbours((4, 4), border, patch) == expected


def test_neighbours_on_grids_narrower_than_the_window():
    # 2x2 with wrap-around: every offset lands on one of the 3 other patches or on itself
    assert neighbours((2, 2), "wrap", 0) == [1, 2, 3]
    assert neighbours((2, 2), "inside", 3) == [0, 1, 2]
    assert neighbours((1, 3), "inside", 1) == [0, 2]
    assert neighbours((1, 1), "inside", 0) == []
    with pytest.raises(ValueError, match="inside"):
        neighbour_indices((4, 4), "reflect")


def test_topk_picks_the_most_similar_neighbours():
    grid = (3, 3)
    tokens = torch.randn(1, 9, 16)
    centre = tokens[0, 4].clone()
    # plant neighbours 1 and 7 as near copies of the centre patch, 3 as its opposite
    tokens[0, 1] = centre + 0.01 * torch.randn(16)
    tokens[0, 7] = 2 * centre
    tokens[0, 3] = -centre
    index, valid = neighbour_indices(grid, "inside")
    positives, exists = select_positives(tokens, index, valid, k=2)
    assert sorted(positives[0, 4].tolist()) == [1, 7] and exists[0, 4].all()
    members = gather_positives(tokens, positives)
    assert torch.equal(members[0, 4, 0], tokens[0, positives[0, 4, 0]])


def test_missing_neighbours_are_never_selected_as_existing():
    index, valid = neighbour_indices((4, 4), "inside")
    positives, exists = select_positives(torch.randn(2, 16, 8), index, valid, k=4)
    assert exists[:, 0].sum(-1).tolist() == [3, 3]  # a corner has 3 in-image neighbours
    assert exists[:, 5].all()
    in_window = {p: set(index[p][valid[p]].tolist()) for p in range(16)}
    for b in range(2):
        for p in range(16):
            chosen = positives[b, p][exists[b, p]].tolist()
            assert set(chosen) <= in_window[p] and len(set(chosen)) == len(chosen)


def test_patch_loss_by_hand_and_its_center():
    loss = PatchLoss(out_dim=2, student_temp=1.0, center_momentum=0.5)
    # one view, batch 1, one patch; teacher logits [0, ln 3] at temperature 1 -> p = [1/4, 3/4]
    teacher = torch.tensor([0.0, math.log(3.0)]).reshape(1, 1, 1, 2)
    student = torch.zeros(1, 1, 1, 2)  # uniform: -log q = log 2 for both entries
    value = loss([student], [teacher], teacher_temp=1.0)
    assert value.item() == pytest.approx(math.log(2.0))
    # a second resolution with 2 views of 2 patches: views are averaged equally
    s2 = torch.tensor([[0.0, 0.0], [0.0, 0.0]]).reshape(2, 1, 1, 2).expand(2, 1, 2, 2)
    t2 = torch.tensor([0.0, 0.0]).reshape(1, 1, 1, 2).expand(2, 1, 2, 2)
    assert loss([student, s2], [teacher, t2], 1.0).item() == pytest.approx(math.log(2.0))
    # the center is the mean teacher output over all tokens of every view: (1 + 1 + 4) tokens
    loss.center.update()
    mean = (2 * teacher.reshape(2) + 0) / 6  # two calls above each accumulated the first view
    assert torch.allclose(loss.center.center[0], 0.5 * mean)


def test_patch_loss_needs_matching_views():
    loss = PatchLoss(4)
    with pytest.raises(ValueError, match="same views"):
        loss([torch.zeros(2, 1, 4, 4)], [torch.zeros(1, 1, 4, 4)], 0.04)


def test_neighbour_tables_are_built_once_per_grid_and_device():
    """The step asks for the same grids every step: no host rebuild and no host-to-device copy."""
    from sync_probe import record

    first = neighbour_indices((5, 6), "wrap", "cpu")
    (index, valid), ops = record(neighbour_indices, (5, 6), "wrap", torch.device("cpu"))
    assert index is first[0] and valid is first[1]
    assert ops.launches == 0
    assert neighbour_indices((6, 5), "wrap")[0].shape == (30, 8)  # another grid: its own table
