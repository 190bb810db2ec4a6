"""EsViT region matching and region loss, against hand computations and invariances."""

import math

import pytest
import torch
import torch.nn.functional as F

from vitssl.losses.esvit import RegionLoss, match_regions


def test_matching_picks_the_most_similar_teacher_region():
    student = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    teacher = torch.tensor([[[0.0, 5.0], [3.0, 0.1], [1.0, 1.2]]])
    # cosines: s0 best with t1; s1 with t0; s2 (45 deg) with t2 (about 50 deg)
    assert match_regions(student, teacher).tolist() == [[1, 0, 2]]
    # magnitude does not matter, only direction
    assert match_regions(student * 7, teacher * 0.01).tolist() == [[1, 0, 2]]


def _pair_loss_by_hand(s_logits, s_tokens, t_logits, t_tokens, temp_s, temp_t):
    """M_R(s, t) with explicit loops over the batch and the student tokens."""
    b, ts, _ = s_logits.shape
    total = 0.0
    for n in range(b):
        for i in range(ts):
            sims = [F.cosine_similarity(s_tokens[n, i], t_tokens[n, j], dim=0) for j in range(t_tokens.shape[1])]
            j = int(torch.tensor(sims).argmax())
            q = F.softmax(t_logits[n, j] / temp_t, dim=-1)
            logp = F.log_softmax(s_logits[n, i] / temp_s, dim=-1)
            total += -(q * logp).sum().item()
    return total / (b * ts)


def test_region_loss_matches_the_per_pair_definition_with_two_resolutions():
    torch.manual_seed(0)
    b, k, c = 2, 5, 3
    t_logits, t_tokens = torch.randn(2, b, 4, k), torch.randn(2, b, 4, c)
    globals_l, globals_t = torch.randn(2, b, 4, k), torch.randn(2, b, 4, c)
    locals_l, locals_t = torch.randn(3, b, 1, k), torch.randn(3, b, 1, c)
    loss = RegionLoss(k, student_temp=0.1)
    value = loss([globals_l, locals_l], [globals_t, locals_t], t_logits, t_tokens, teacher_temp=0.04)
    student_views = [(globals_l[v], globals_t[v]) for v in range(2)] + [(locals_l[v], locals_t[v]) for v in range(3)]
    pairs = [(t, s) for t in range(2) for s in range(5) if s != t]
    want = sum(_pair_loss_by_hand(*student_views[s], t_logits[t], t_tokens[t], 0.1, 0.04) for t, s in pairs) / len(pairs)
    assert len(pairs) == 8
    assert value.item() == pytest.approx(want, rel=1e-5)


def test_permuting_the_teacher_regions_leaves_the_loss_unchanged():
    torch.manual_seed(1)
    s_l, s_t = torch.randn(4, 2, 6, 8), torch.randn(4, 2, 6, 3)
    t_l, t_t = torch.randn(2, 2, 6, 8), torch.randn(2, 2, 6, 3)
    perm = torch.randperm(6)
    a = RegionLoss(8)([s_l], [s_t], t_l, t_t, 0.04)
    b = RegionLoss(8)([s_l], [s_t], t_l[:, :, perm], t_t[:, :, perm], 0.04)
    assert torch.allclose(a, b)


def test_center_is_the_mean_over_all_teacher_region_tokens():
    loss = RegionLoss(4, center_momentum=0.0)
    t_logits = torch.randn(2, 3, 5, 4)
    loss([torch.randn(2, 3, 5, 4)], [torch.randn(2, 3, 5, 2)], t_logits, torch.randn(2, 3, 5, 2), 0.04)
    loss.center.update()
    assert torch.allclose(loss.center.center[0], t_logits.reshape(-1, 4).mean(0), atol=1e-6)


def test_gradient_reaches_student_logits_not_the_matching():
    s_l = torch.randn(2, 1, 3, 4, requires_grad=True)
    s_t = torch.randn(2, 1, 3, 2, requires_grad=True)
    RegionLoss(4)([s_l], [s_t], torch.randn(2, 1, 3, 4), torch.randn(2, 1, 3, 2), 0.04).backward()
    assert s_l.grad is not None and s_l.grad.abs().sum() > 0
    assert s_t.grad is None  # the argmax index carries no gradient


def test_uniform_teacher_and_student_give_log_k():
    k = 16
    loss = RegionLoss(k, student_temp=1.0)
    value = loss([torch.zeros(2, 1, 3, k)], [torch.randn(2, 1, 3, 2)], torch.zeros(2, 1, 3, k), torch.randn(2, 1, 3, 2), 1.0)
    assert value.item() == pytest.approx(math.log(k))
