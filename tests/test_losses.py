from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from upstream.encoders import EncoderConfig
from upstream.losses import CenteredDistillation, global_loss, local_loss, masked_l1
from upstream.masking import apply_masks, token_mask
from upstream.objectives.asit import ASiTConfig, ASiTObjective
from upstream.schedules import TrainingProgress, cosine, linear_warmup


def _softmax(xs: list[float]) -> list[float]:
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


def _ce(teacher: list[float], student: list[float], center: list[float], tt: float, ts: float) -> float:
    p = _softmax([(t - c) / tt for t, c in zip(teacher, center)])
    q = _softmax([s / ts for s in student])
    return -sum(pi * math.log(qi) for pi, qi in zip(p, q))


def test_masked_l1_counts_only_masked_pixels() -> None:
    target = torch.zeros(1, 1, 4, 4)
    pred = torch.ones(1, 1, 4, 4)
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    mask[..., :2, :] = True
    pred[..., :2, :] = 3.0          # masked error 3
    pred[..., 2:, :] = 100.0        # unmasked error: must not count
    assert masked_l1(pred, target, mask).item() == pytest.approx(3.0)
    assert masked_l1(pred, target, torch.zeros_like(mask)).item() == 0.0


def test_global_loss_equals_hand_computation() -> None:
    distill = CenteredDistillation(3, student_temp=0.1)
    distill.center.copy_(torch.tensor([[0.1, -0.2, 0.0]]))
    s = torch.tensor([[[0.2, 0.1, -0.3], [0.5, -0.5, 0.0]]])     # [B=1, V=2, K=3]
    t = torch.tensor([[[1.0, 0.0, 0.2], [-0.1, 0.3, 0.1]]])
    got = global_loss(distill, s, distill.teacher_probs(t, teacher_temp=0.07)).item()
    c = [0.1, -0.2, 0.0]
    hand = 0.5 * (_ce(t[0, 1].tolist(), s[0, 0].tolist(), c, 0.07, 0.1)
                  + _ce(t[0, 0].tolist(), s[0, 1].tolist(), c, 0.07, 0.1))
    assert got == pytest.approx(hand, rel=1e-5)


def test_local_loss_averages_the_manipulated_rows_it_is_given() -> None:
    distill = CenteredDistillation(2, student_temp=0.1)
    s = torch.tensor([[[[0.3, -0.1], [2.0, 0.0], [0.0, 0.4]]]])   # [B=1, V=1, N=3, K=2]
    t = torch.tensor([[[[0.2, 0.1], [9.0, -9.0], [-0.3, 0.2]]]])
    manipulated = torch.tensor([[[True, False, True]]])
    got = local_loss(distill, s[manipulated], distill.teacher_probs(t[manipulated], teacher_temp=0.07)).item()
    hand = 0.5 * (_ce([0.2, 0.1], [0.3, -0.1], [0, 0], 0.07, 0.1) + _ce([-0.3, 0.2], [0.0, 0.4], [0, 0], 0.07, 0.1))
    assert got == pytest.approx(hand, rel=1e-5)


def test_local_loss_without_manipulated_tokens_is_zero_and_differentiable() -> None:
    student = torch.zeros(0, 4, requires_grad=True)
    loss = local_loss(CenteredDistillation(4), student, torch.zeros(0, 4))
    loss.backward()
    assert loss.item() == 0.0 and student.grad is not None


def test_asit_step_equals_the_losses_over_every_token_and_its_gradients() -> None:
    """The step computes student logits only for CLS + manipulated tokens and the teacher under inference_mode;
    the losses and the student's gradients equal the textbook computation over all tokens with zero weights."""
    torch.manual_seed(0)
    enc = EncoderConfig(size="tiny", embed_dim=32, depth=2, num_heads=2, trained_frames=64, drop_path_rate=0.0)
    obj = ASiTObjective(ASiTConfig(out_dim=16, head_hidden_dim=16, head_bottleneck_dim=8, recon_hidden_dim=16,
                                   recon_bottleneck_dim=8), enc)
    with torch.no_grad():
        obj.distill_cls.center.normal_()
        obj.distill_data.center.normal_()
        for p in obj.teacher.parameters():          # a teacher that differs from the student, as after training
            p.add_(0.01 * torch.randn_like(p))
    views = torch.randn(3, 2, 1, 64, 128)
    transform = obj.view_transform()
    extras = [transform({"views": views[i]}, np.random.default_rng(i)) for i in range(3)]
    batch = {"views": views, **{k: torch.stack([e[k] for e in extras]) for k in extras[0]}}
    progress = TrainingProgress(step=3, total_steps=10, epoch=0, steps_per_epoch=10)
    temp = obj.teacher_temp(progress)
    reference = copy.deepcopy(obj)

    b, v = 3, 2
    corrupted = apply_masks(views, batch["masks"], batch["use_other_clip"]).flatten(0, 1)
    student_logits = reference.student_head(reference.student.forward_features(corrupted))      # every token
    with torch.no_grad():
        teacher_logits = reference.teacher_head(reference.teacher.forward_features(views.flatten(0, 1)))
    weights = token_mask(batch["masks"], 16).flatten(0, 1).float()
    assert 0 < weights.mean() < 1                                           # some tokens are left out
    per_token = reference.distill_data.cross_entropy(
        reference.distill_data.teacher_probs(teacher_logits[:, 1:], temp), student_logits[:, 1:])
    local_ref = (per_token * weights).sum() / weights.sum()
    cls_probs = reference.distill_cls.teacher_probs(teacher_logits[:, 0], temp).reshape(b, v, -1)
    global_ref = global_loss(reference.distill_cls, student_logits[:, 0].reshape(b, v, -1), cls_probs)
    (local_ref + global_ref).backward()

    losses = obj.training_losses(batch, progress)
    assert losses["loss_local"].item() == pytest.approx(local_ref.item(), rel=1e-5)
    assert losses["loss_global"].item() == pytest.approx(global_ref.item(), rel=1e-5)
    (losses["loss_local"] + losses["loss_global"]).backward()
    for (name, got), want in zip(obj.student.named_parameters(), reference.student.parameters()):
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-4, atol=1e-6, msg=name)
    assert all(p.grad is None for p in obj.teacher.parameters())


def test_center_is_an_ema_of_the_batch_mean() -> None:
    distill = CenteredDistillation(2, center_momentum=0.9)
    distill.center.copy_(torch.tensor([[1.0, -1.0]]))
    distill.update_center(torch.tensor([[[2.0, 0.0], [4.0, 2.0]]]))   # mean over all rows: [3, 1]
    torch.testing.assert_close(distill.center, torch.tensor([[0.9 * 1 + 0.1 * 3, 0.9 * -1 + 0.1 * 1]]))


def test_ema_teacher_update_follows_the_cosine_momentum() -> None:
    enc = EncoderConfig(size="tiny", embed_dim=32, depth=1, num_heads=2, trained_frames=32)
    obj = ASiTObjective(ASiTConfig(out_dim=16, head_hidden_dim=16, head_bottleneck_dim=8, recon_hidden_dim=16,
                                   recon_bottleneck_dim=8), enc)
    with torch.no_grad():
        for p in obj.student.parameters():
            p.add_(1.0)
    before = {k: v.clone() for k, v in obj.teacher.state_dict().items()}
    student = obj.student.state_dict()
    progress = TrainingProgress(step=5, total_steps=11, epoch=0, steps_per_epoch=11)
    m = obj.teacher_momentum(progress)
    assert m == pytest.approx(1.0 - 0.004 * 0.5)   # halfway along the cosine from 0.996 to 1
    obj.after_optimizer_step(progress)
    for name, value in obj.teacher.state_dict().items():
        torch.testing.assert_close(value, m * before[name] + (1 - m) * student[name])


def test_teacher_starts_equal_to_student_and_gets_no_gradient() -> None:
    enc = EncoderConfig(size="tiny", embed_dim=32, depth=1, num_heads=2, trained_frames=32)
    obj = ASiTObjective(ASiTConfig(out_dim=16, head_hidden_dim=16, head_bottleneck_dim=8), enc)
    for (name, s), t in zip(obj.student.state_dict().items(), obj.teacher.state_dict().values()):
        assert s.equal(t), name
    assert not any(p.requires_grad for p in obj.teacher.parameters())


def test_schedules() -> None:
    assert cosine(0.04, 0.4, 0, 100) == pytest.approx(0.04)
    assert cosine(0.04, 0.4, 99, 100) == pytest.approx(0.4)
    assert cosine(0.04, 0.4, 1000, 100) == pytest.approx(0.4)
    assert linear_warmup(0.04, 0.07, 0, 10) == pytest.approx(0.04)
    assert linear_warmup(0.04, 0.07, 5, 10) == pytest.approx(0.055)
    assert linear_warmup(0.04, 0.07, 10, 10) == pytest.approx(0.07)


def test_loss_weights_combine_terms_and_reject_unknown_names() -> None:
    from upstream.errors import AsitError
    with pytest.raises(AsitError, match="loss_weights"):
        ASiTConfig(loss_weights={"recon": 2.0, "typo": 1.0}).check()
