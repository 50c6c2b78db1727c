"""Time-span masks for the conformer wav2vec 2.0 objective: an exact fraction of the latent steps Z, in spans.

The paper says "mask 30% of the latent representations Z" (Srivastava et al. §2.3), so here the realised fraction is
the configured one, not an expectation of it:

- n_mask = round_half_up(prob * num_steps), raised to `min_spans` so that short clips still get that many spans, and
  capped at num_steps - 1 so that at least one step stays visible (num_steps < 2 is an error).
- The masked steps form n_spans = ceil(n_mask / length) non-overlapping spans of `length` steps, except one span
  (at a random place in the order) that takes the remainder. If that would give fewer than min(min_spans, n_mask)
  spans, spans are shortened (each keeps at least one step) until there are that many.
- The spans are placed uniformly at random among all layouts with gaps >= 0 between them (stars and bars: the
  free steps are split into n_spans + 1 gaps by drawing n_spans sorted slots among free + n_spans). Adjacent spans
  may touch, so a maximal run of masked steps can hold several spans.

Why not fairseq's semantics (span starts drawn with probability p / M, M steps each, overlap allowed): its masked
fraction is only p in expectation *before* overlaps merge spans, so it falls short of p; for p = 0.3, M = 3 and a
10-s clip (T = 124 steps) the realised fraction is about 0.25, not the 30% the paper states.

The mask is a pure function of (num_steps, config, rng state), so a data worker's per-sample rng makes it
reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import AsitError


@dataclass(frozen=True)
class SpanMaskConfig:
    prob: float = 0.3  # fraction of time steps masked (paper §2.3: "mask 30% of the latent representations Z")
    length: int = 3  # span length in steps (the paper gives none; torchaudio's implementation of the paper uses 3)
    min_spans: int = 2  # at least this many spans, even on short clips (as wav2vec 2.0's min_masks)

    def check(self) -> None:
        """Reject values that cannot give a mask, naming the config field."""
        if not 0.0 < self.prob < 1.0:
            raise AsitError(f"objective.mask.prob must be in (0, 1), got {self.prob}")
        if isinstance(self.length, bool) or not isinstance(self.length, int) or self.length < 1:
            raise AsitError(f"objective.mask.length must be an integer >= 1, got {self.length!r}")
        if isinstance(self.min_spans, bool) or not isinstance(self.min_spans, int) or self.min_spans < 1:
            raise AsitError(f"objective.mask.min_spans must be an integer >= 1, got {self.min_spans!r}")


def num_masked(num_steps: int, config: SpanMaskConfig) -> int:
    """How many of `num_steps` steps a mask covers: every mask of that length has this count, so batches stack."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 2:
        raise AsitError(f"num_steps must be an integer >= 2 (one masked, one visible), got {num_steps!r}")
    config.check()
    n_mask = math.floor(config.prob * int(num_steps) + 0.5)
    return min(max(n_mask, config.min_spans), int(num_steps) - 1)


def span_layout(num_steps: int, config: SpanMaskConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(starts, lengths) of the spans, sorted by start: the layout behind `span_mask`, exposed for tests/debugging."""
    n_mask = num_masked(num_steps, config)
    n_spans = max(-(-n_mask // config.length), min(config.min_spans, n_mask))
    # full spans first, each later span keeping at least one step; then shuffle which span is the short one(s)
    lengths = np.empty(n_spans, dtype=np.int64)
    left = n_mask
    for k in range(n_spans):
        lengths[k] = min(config.length, left - (n_spans - k - 1))
        left -= int(lengths[k])
    lengths = rng.permutation(lengths)
    free = int(num_steps) - n_mask
    slots = np.sort(rng.choice(free + n_spans, size=n_spans, replace=False))
    gaps_before = slots - np.arange(n_spans)  # free steps before span k (non-decreasing)
    starts = gaps_before + np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return starts.astype(np.int64), lengths


def span_mask(num_steps: int, config: SpanMaskConfig, rng: np.random.Generator) -> np.ndarray:
    """bool [num_steps]: exactly `num_masked(num_steps, config)` masked steps in random non-overlapping spans.

    See the module docstring for the count and layout rules; deterministic given the rng state.
    """
    starts, lengths = span_layout(num_steps, config, rng)
    mask = np.zeros(int(num_steps), dtype=bool)
    for start, length in zip(starts.tolist(), lengths.tolist()):
        mask[start:start + length] = True
    return mask
