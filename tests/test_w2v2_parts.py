"""Building blocks of the conformer wav2vec 2.0 objective: span masks, distractors, contrastive loss, quantizer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from upstream.contrastive import contrastive_logits, contrastive_loss, gather_steps, sample_distractors
from upstream.errors import AsitError
from upstream.quantizer import GumbelProductQuantizer, gumbel_temperature
from upstream.span_mask import SpanMaskConfig, num_masked, span_layout, span_mask


def _runs(mask: np.ndarray) -> list[int]:
    """Lengths of the maximal runs of True."""
    padded = np.concatenate([[0], mask.astype(int), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return (edges[1::2] - edges[0::2]).tolist()


# ---- span masks ---------------------------------------------------------------------------------------------------

def test_span_mask_fraction_is_exact_per_draw() -> None:
    rng = np.random.default_rng(0)
    cfg = SpanMaskConfig()
    masks = np.stack([span_mask(124, cfg, rng) for _ in range(1000)])
    assert num_masked(124, cfg) == 37  # round(0.3 * 124)
    assert (masks.sum(axis=1) == 37).all()
    assert abs(masks.mean() - 0.30) <= 0.03
    # placement is uniform away from the edges (an edge step is covered only by a span that starts or ends there)
    per_step = masks.mean(axis=0)
    assert per_step.min() > 0.08
    assert np.abs(per_step[6:-6] - 0.30).max() < 0.07


def test_span_layout_is_non_overlapping_spans_of_the_configured_length() -> None:
    rng = np.random.default_rng(1)
    cfg = SpanMaskConfig(prob=0.3, length=3)
    for _ in range(200):
        starts, lengths = span_layout(124, cfg, rng)
        assert len(starts) == math.ceil(37 / 3) == 13
        assert sorted(lengths.tolist()) == [1] + [3] * 12
        ends = starts + lengths
        assert (starts[1:] >= ends[:-1]).all() and starts[0] >= 0 and ends[-1] <= 124
        mask = span_mask(124, cfg, rng)
        runs = _runs(mask)
        # spans may touch, so a maximal run is a sum of spans: at most 13 runs, total 37, each >= 1
        assert 1 <= len(runs) <= 13 and sum(runs) == 37 and min(runs) >= 1
    # the layout and the mask agree
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    starts, lengths = span_layout(124, cfg, rng_a)
    expected = np.zeros(124, dtype=bool)
    for s, n in zip(starts, lengths):
        expected[s:s + n] = True
    assert (span_mask(124, cfg, rng_b) == expected).all()


def test_short_clips_get_min_spans_and_keep_a_visible_step() -> None:
    cfg = SpanMaskConfig(prob=0.3, length=3, min_spans=2)
    rng = np.random.default_rng(2)
    for _ in range(100):
        starts, lengths = span_layout(5, cfg, rng)  # round(1.5) = 2 steps -> two spans of 1
        assert len(starts) >= 2 and lengths.sum() == 2
        assert span_mask(5, cfg, rng).sum() == 2
    assert span_mask(2, cfg, rng).sum() == 1  # capped at num_steps - 1
    assert num_masked(3, SpanMaskConfig(prob=0.9)) == 2
    with pytest.raises(AsitError, match="num_steps"):
        span_mask(1, cfg, rng)


def test_span_mask_is_deterministic_per_seed() -> None:
    cfg = SpanMaskConfig()
    a = span_mask(124, cfg, np.random.default_rng(11))
    b = span_mask(124, cfg, np.random.default_rng(11))
    c = span_mask(124, cfg, np.random.default_rng(12))
    assert (a == b).all()
    assert (a != c).any()


@pytest.mark.parametrize("kwargs, field", [({"prob": 0.0}, "prob"), ({"prob": 1.0}, "prob"),
                                           ({"length": 0}, "length"), ({"min_spans": 0}, "min_spans")])
def test_bad_span_config_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(AsitError, match=f"objective.mask.{field}"):
        SpanMaskConfig(**kwargs).check()
    with pytest.raises(AsitError, match=f"objective.mask.{field}"):
        span_mask(50, SpanMaskConfig(**kwargs), np.random.default_rng(0))


# ---- distractors --------------------------------------------------------------------------------------------------

def _mask_with_counts(rows: list[list[int]], steps: int) -> torch.Tensor:
    mask = torch.zeros(len(rows), steps, dtype=torch.bool)
    for b, idx in enumerate(rows):
        mask[b, idx] = True
    return mask


def test_distractors_are_other_masked_steps_of_the_same_clip() -> None:
    rows = [[1, 4, 5, 9, 17, 18], [0, 2, 3, 11, 12, 19]]
    mask = _mask_with_counts(rows, 20)
    draws = sample_distractors(mask, 100, torch.Generator().manual_seed(0))
    assert draws.shape == (2, 6, 100) and draws.dtype == torch.long
    for b, idx in enumerate(rows):
        for j, own in enumerate(idx):
            picked = set(draws[b, j].tolist())
            assert own not in picked
            assert picked <= set(idx) - {own}
            assert picked == set(idx) - {own}  # 100 draws over 5 choices: all appear


def test_distractors_are_uniform_over_the_other_masked_steps() -> None:
    rows = [[1, 4, 5, 9, 17, 18]]
    mask = _mask_with_counts(rows, 20)
    n = 20_000
    draws = sample_distractors(mask, n, torch.Generator().manual_seed(1))
    for j, own in enumerate(rows[0]):
        others = [s for s in rows[0] if s != own]
        counts = np.array([(draws[0, j] == s).sum().item() for s in others])
        assert counts.sum() == n
        expected = n / len(others)
        chi2 = ((counts - expected) ** 2 / expected).sum()
        assert chi2 < 25.0  # 4 degrees of freedom: p < 1e-4 for a uniform sampler


def test_distractors_are_deterministic_given_the_generator() -> None:
    mask = _mask_with_counts([[0, 3, 5, 7]], 8)
    a = sample_distractors(mask, 10, torch.Generator().manual_seed(5))
    b = sample_distractors(mask, 10, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_unequal_or_too_few_masked_counts_raise() -> None:
    with pytest.raises(AsitError, match=r"\[3, 2\]"):
        sample_distractors(_mask_with_counts([[0, 1, 2], [3, 4]], 6), 4)
    with pytest.raises(AsitError, match="masked steps"):
        sample_distractors(_mask_with_counts([[0], [3]], 6), 4)
    with pytest.raises(AsitError, match="num"):
        sample_distractors(_mask_with_counts([[0, 1], [3, 4]], 6), 0)


def test_gather_steps_picks_per_clip() -> None:
    values = torch.arange(2 * 5 * 3, dtype=torch.float32).view(2, 5, 3)
    index = torch.tensor([[[0, 4], [2, 2]], [[1, 3], [4, 0]]])
    out = gather_steps(values, index)
    assert out.shape == (2, 2, 2, 3)
    for b in range(2):
        for i in range(2):
            for k in range(2):
                assert torch.equal(out[b, i, k], values[b, index[b, i, k]])


# ---- contrastive logits and loss ----------------------------------------------------------------------------------

@pytest.mark.parametrize("temperature", [0.1, 1.0])
def test_contrastive_matches_a_hand_computation(temperature: float) -> None:
    context = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])  # B=1, M=2, C=2
    positives = torch.tensor([[[1.0, 1.0], [3.0, 4.0]]])
    distractors = torch.tensor([[[[0.0, 1.0], [-1.0, 0.0]], [[1.0, 0.0], [-2.0, -2.0]]]])  # K=2
    logits = contrastive_logits(context, positives, distractors, temperature=temperature)
    expected = [[1 / math.sqrt(2) / temperature, 0.0, -1.0 / temperature],
                [4 / 5 / temperature, 0.0, -1 / math.sqrt(2) / temperature]]
    assert logits.dtype == torch.float32
    assert torch.allclose(logits[0], torch.tensor(expected), atol=1e-5)
    ce = [-row[0] + math.log(sum(math.exp(v) for v in row)) for row in expected]
    # float32 log-sum-exp of logits near 10 is good to ~1e-6 absolute
    assert contrastive_loss(logits).item() == pytest.approx(sum(ce) / 2, rel=1e-5, abs=2e-6)


def test_distractor_equal_to_positive_is_ignored() -> None:
    context = torch.tensor([[[0.3, -1.0, 2.0]]])
    positive = torch.tensor([[[1.0, 0.5, 0.2]]])
    others = torch.tensor([[[[0.0, 1.0, 0.0], [2.0, -1.0, 1.0]]]])
    with_dup = torch.cat([others[:, :, :1], positive.unsqueeze(2), others[:, :, 1:]], dim=2)
    logits = contrastive_logits(context, positive, with_dup)
    assert logits[0, 0, 2].item() == float("-inf")
    assert torch.isfinite(logits[0, 0, [0, 1, 3]]).all()
    reference = contrastive_logits(context, positive, others)
    assert contrastive_loss(logits).item() == pytest.approx(contrastive_loss(reference).item(), rel=1e-6)
    # a distractor merely parallel to the positive (same cosine, different vector) still counts
    scaled = contrastive_logits(context, positive, 2 * positive.unsqueeze(2))
    assert torch.isfinite(scaled).all()


def test_perfect_context_against_orthogonal_distractors() -> None:
    k = 3
    context = torch.tensor([[[1.0, 0.0, 0.0, 0.0]]])
    distractors = torch.tensor([[[[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, -1.0]]]])
    loss = contrastive_loss(contrastive_logits(context, context.clone(), distractors, temperature=0.1))
    assert loss.item() == pytest.approx(math.log(1 + k * math.exp(-10.0)), rel=1e-5, abs=2e-6)  # 1.362e-4
    # same at temperature 1, where float32 resolves it finely: log(1 + K e^-1)
    loss1 = contrastive_loss(contrastive_logits(context, context.clone(), distractors, temperature=1.0))
    assert loss1.item() == pytest.approx(math.log(1 + k * math.exp(-1.0)), rel=1e-6)


def test_contrastive_logits_are_float32_from_half_inputs_and_carry_gradients() -> None:
    torch.manual_seed(0)
    context = torch.randn(2, 3, 4, dtype=torch.bfloat16, requires_grad=True)
    latents = torch.randn(2, 6, 4, dtype=torch.bfloat16)
    mask = _mask_with_counts([[0, 2, 5], [1, 3, 4]], 6)
    positives = gather_steps(latents, mask.nonzero()[:, 1].view(2, 3))
    distractors = gather_steps(latents, sample_distractors(mask, 5, torch.Generator().manual_seed(0)))
    logits = contrastive_logits(context, positives, distractors)
    assert logits.dtype == torch.float32 and logits.shape == (2, 3, 6)
    contrastive_loss(logits).backward()
    assert context.grad is not None and context.grad.abs().sum() > 0


# ---- quantizer ----------------------------------------------------------------------------------------------------

def test_gumbel_temperature_schedule() -> None:
    assert gumbel_temperature(0) == 2.0
    assert gumbel_temperature(300_000) == 0.5
    assert gumbel_temperature(100_000) == pytest.approx(2 * 0.999995 ** 100_000)
    with pytest.raises(AsitError, match="step"):
        gumbel_temperature(-1)


def _quantizer(groups: int = 2, entries: int = 4, dim: int = 3) -> GumbelProductQuantizer:
    torch.manual_seed(0)
    return GumbelProductQuantizer(dim, groups=groups, entries=entries, codebook_dim=4, output_dim=5)


def test_uniform_softmax_gives_full_perplexity_and_zero_diversity_loss() -> None:
    q = _quantizer().eval()
    with torch.no_grad():
        q.logits.weight.zero_()
        q.logits.bias.zero_()
    out = q(torch.randn(2, 6, 3), temperature=2.0)
    assert out.prob_perplexity.item() == pytest.approx(2 * 4, rel=1e-6)
    assert out.diversity_loss.item() == pytest.approx(0.0, abs=1e-6)


def test_peaked_softmax_gives_perplexity_g() -> None:
    q = _quantizer().eval()
    with torch.no_grad():
        q.logits.weight.zero_()
        q.logits.bias.copy_(torch.tensor([0.0, 60.0, 0.0, 0.0, 0.0, 0.0, 0.0, 60.0]))
    out = q(torch.randn(7, 3), temperature=2.0)
    assert out.prob_perplexity.item() == pytest.approx(2.0, rel=1e-5)
    assert out.diversity_loss.item() == pytest.approx((8 - 2) / 8, rel=1e-5)
    assert (out.codes == torch.tensor([1, 3])).all()
    assert out.code_perplexity.item() == pytest.approx(2.0, rel=1e-6)


def test_perplexity_matches_a_hand_computation_over_masked_positions() -> None:
    q = _quantizer().eval()
    x = torch.randn(2, 5, 3)
    mask = torch.tensor([[True, False, True, True, False], [False, False, True, False, True]])
    out = q(x, temperature=1.0, mask=mask)
    w, b = q.logits.weight.detach().double().numpy(), q.logits.bias.detach().double().numpy()
    rows = x.double().numpy()[mask.numpy()]  # the 5 selected positions
    logits = (rows @ w.T + b).reshape(-1, 2, 4)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    avg = probs.mean(0)
    perplexity = sum(math.exp(-sum(p * math.log(p) for p in group)) for group in avg)
    assert out.prob_perplexity.item() == pytest.approx(perplexity, rel=1e-5)
    assert out.diversity_loss.item() == pytest.approx((8 - perplexity) / 8, rel=1e-5)
    # code perplexity from the hard codes of the same positions
    codes = logits.argmax(-1)
    hand = 0.0
    for g in range(2):
        freq = np.bincount(codes[:, g], minlength=4) / len(codes)
        hand += math.exp(-sum(f * math.log(f) for f in freq if f > 0))
    assert out.code_perplexity.item() == pytest.approx(hand, rel=1e-5)
    # mask=None averages over all positions, which differs here
    assert out.prob_perplexity.item() != pytest.approx(q(x, temperature=1.0).prob_perplexity.item(), rel=1e-6)


def test_eval_mode_picks_the_argmax_entries_exactly() -> None:
    q = _quantizer().eval()
    x = torch.randn(4, 6, 3)
    out = q(x, temperature=1.0)
    logits = q.logits(x).view(4, 6, 2, 4)
    assert torch.equal(out.codes, logits.argmax(-1))
    codebook = q.codebook.view(2, 4, 2)
    expected = q.project(torch.cat([codebook[0, out.codes[..., 0]], codebook[1, out.codes[..., 1]]], dim=-1))
    assert torch.equal(out.quantized, expected)
    assert torch.equal(q(x, temperature=0.7).quantized, out.quantized)  # deterministic, temperature-free


def test_training_mode_is_a_codebook_combination_with_straight_through_gradient() -> None:
    q = _quantizer().train()
    x = torch.randn(3, 8, 3)
    torch.manual_seed(1)
    out = q(x, temperature=2.0)
    assert out.quantized.shape == (3, 8, 5) and out.codes.shape == (3, 8, 2)
    codebook = q.codebook.view(2, 4, 2)
    expected = q.project(torch.cat([codebook[0, out.codes[..., 0]], codebook[1, out.codes[..., 1]]], dim=-1))
    assert torch.allclose(out.quantized, expected, atol=1e-6)
    out.quantized.square().sum().backward()
    assert q.logits.weight.grad is not None and q.logits.weight.grad.abs().sum() > 0
    assert q.codebook.grad is not None and q.codebook.grad.abs().sum() > 0
    # Gumbel noise: with a flat softmax the sampled codes vary across positions
    with torch.no_grad():
        q.logits.weight.zero_()
    assert len({tuple(c) for c in q(x, temperature=2.0).codes.view(-1, 2).tolist()}) > 1


def test_diversity_loss_has_a_gradient_to_the_logits() -> None:
    q = _quantizer().eval()
    out = q(torch.randn(10, 3), temperature=1.0)
    out.diversity_loss.backward()
    assert q.logits.weight.grad is not None and torch.isfinite(q.logits.weight.grad).all()
    assert q.logits.weight.grad.abs().sum() > 0


def test_quantizer_rejects_bad_arguments() -> None:
    with pytest.raises(AsitError, match="codebook_dim"):
        GumbelProductQuantizer(3, groups=3, entries=4, codebook_dim=4)
    q = _quantizer()
    with pytest.raises(AsitError, match="temperature"):
        q(torch.randn(2, 3), temperature=0.0)
    with pytest.raises(AsitError, match="mask"):
        q(torch.randn(2, 3), temperature=1.0, mask=torch.zeros(2, dtype=torch.bool))
    with pytest.raises(AsitError, match="x must be"):
        q(torch.randn(2, 4), temperature=1.0)
