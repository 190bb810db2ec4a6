import math

import pytest
import torch
import torch.nn.functional as F

from vitssl.losses import DINOLoss, multicrop_cross_entropy, teacher_statistics


def test_two_crop_loss_by_hand():
    # K = 2, B = 1, 2 views, center 0. Pairs (t=0,s=1) and (t=1,s=0).
    teacher = torch.tensor([[[0.0, 0.04 * math.log(3.0)]], [[0.0, 0.0]]])  # P_t = [1/4, 3/4] and [1/2, 1/2]
    student = torch.tensor([[[0.0, 0.0]], [[0.1 * math.log(2.0), 0.0]]])  # P_s = [1/2, 1/2] and [2/3, 1/3]
    loss = DINOLoss(out_dim=2, student_temp=0.1)(student, teacher, teacher_temp=0.04)
    ce_01 = -(0.25 * math.log(2 / 3) + 0.75 * math.log(1 / 3))
    ce_10 = -(0.5 * math.log(1 / 2) + 0.5 * math.log(1 / 2))
    assert loss.item() == pytest.approx((ce_01 + ce_10) / 2, rel=1e-5)


def test_pair_count_and_matches_loop():
    n_local, batch, k = 3, 4, 7
    teacher = torch.randn(2, batch, k)
    student = torch.randn(2 + n_local, batch, k)
    t_probs = F.softmax(teacher / 0.04, -1)
    s_logp = F.log_softmax(student / 0.1, -1)
    total, pairs = 0.0, 0
    for t in range(2):
        for s in range(2 + n_local):
            if s == t:
                continue
            total += (-(t_probs[t] * s_logp[s]).sum(-1)).mean()
            pairs += 1
    assert pairs == 2 * (n_local + 1)
    assert multicrop_cross_entropy(t_probs, s_logp).item() == pytest.approx((total / pairs).item(), rel=1e-5)


def test_loss_uses_old_center_and_center_update_is_ema():
    loss_fn = DINOLoss(out_dim=3, center_momentum=0.9)
    loss_fn.center.center.fill_(1.0)
    teacher = torch.randn(2, 5, 3)
    student = torch.randn(4, 5, 3)
    expected = multicrop_cross_entropy(F.softmax((teacher - 1.0) / 0.05, -1), F.log_softmax(student / 0.1, -1))
    assert loss_fn(student, teacher, 0.05).item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.all(loss_fn.center.center == 1.0)  # not updated until the optimizer step
    loss_fn.center.update()
    want = 0.9 * 1.0 + 0.1 * teacher.reshape(-1, 3).mean(0, keepdim=True)
    assert torch.allclose(loss_fn.center.center, want, atol=1e-6)


def test_center_accumulates_micro_batches_like_one_batch():
    a, b = DINOLoss(4), DINOLoss(4)
    t1, t2 = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    a.center.accumulate(t1)
    a.center.accumulate(t2)
    a.center.update()
    b.center.accumulate(torch.cat([t1, t2], dim=1))
    b.center.update()
    assert torch.allclose(a.center.center, b.center.center, atol=1e-6)


def test_no_gradient_to_teacher_logits():
    teacher = torch.randn(2, 3, 5, requires_grad=True)
    student = torch.randn(4, 3, 5, requires_grad=True)
    DINOLoss(5)(student, teacher, 0.04).backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_single_view_is_refused():
    with pytest.raises(ValueError, match="at least 2 student views"):
        DINOLoss(5)(torch.randn(1, 2, 5), torch.randn(1, 2, 5), 0.04)


def test_teacher_statistics_by_hand():
    # two images, one-hot on different prototypes of K = 4: sharp but informative
    probs = torch.tensor([[[1.0, 0, 0, 0], [0, 1.0, 0, 0]]])
    s = {k: float(v) for k, v in teacher_statistics(probs).items()}
    assert s["teacher_entropy"] == pytest.approx(0.0, abs=1e-6)
    assert s["teacher_kl_uniform"] == pytest.approx(math.log(2))  # log 4 - H([.5, .5, 0, 0])
    assert s["teacher_mutual_info"] == pytest.approx(math.log(2))
    # every image uniform: entropy log K, nothing said about the image
    s = {k: float(v) for k, v in teacher_statistics(torch.full((2, 3, 4), 0.25)).items()}
    assert s["teacher_entropy"] == pytest.approx(math.log(4))
    assert s["teacher_kl_uniform"] == pytest.approx(0.0, abs=1e-6)
    assert s["teacher_mutual_info"] == pytest.approx(0.0, abs=1e-6)


def test_loss_has_no_host_device_sync():
    """The pair mask is a masked sum, not boolean indexing (a `nonzero` sync on a GPU)."""
    from sync_probe import record

    teacher, student = F.softmax(torch.randn(2, 4, 8), -1), F.log_softmax(torch.randn(6, 4, 8), -1)
    loss, ops = record(multicrop_cross_entropy, teacher, student)
    assert ops.syncs == 0 and ops.host_data_copies == 0, ops.calls
    # T = 3 teacher views and S = 2 student views: only 2 same-view pairs to skip, 4 remain
    t3, s2 = F.softmax(torch.randn(3, 1, 5), -1), F.log_softmax(torch.randn(2, 1, 5), -1)
    ce = -torch.einsum("tbk,sbk->ts", t3, s2)
    expected = (ce.sum() - ce[0, 0] - ce[1, 1]) / 4
    assert multicrop_cross_entropy(t3, s2).item() == pytest.approx(expected.item(), rel=1e-6)
