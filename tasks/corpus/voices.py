"""The pool of synthetic speakers: espeak-ng accent × voice variant × pitch × speed.

espeak-ng silently ignores a variant it does not know, and ignores *every* variant after some accent names
(`en-gb`, `en-uk-*`, …): the lists below hold only combinations checked to change the audio
(tests/test_corpus.py re-checks that every combination sounds different).
"""

from __future__ import annotations

import numpy as np

from .synth import Voice

ACCENTS: tuple[str, ...] = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
                            "en-029", "en-us-nyc")
VARIANTS: tuple[str, ...] = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
                             "klatt", "klatt2", "klatt3", "croak")

PITCH_RANGE: tuple[int, int] = (15, 85)
SPEED_RANGE: tuple[int, int] = (135, 195)


def voice_names() -> list[str]:
    """Every accent+variant combination, e.g. `en-us+m3`."""
    return [f"{accent}+{variant}" for accent in ACCENTS for variant in VARIANTS]


def draw_voices(rng: np.random.Generator, count: int, exclude: frozenset[str] = frozenset()) -> list[Voice]:
    """`count` speakers with distinct accent+variant (so no two speakers share a timbre) and their own pitch/speed.

    Variants are spread first (a new variant before a reused one), because the variant changes the voice more than
    the accent does.
    """
    names = [name for name in voice_names() if name not in exclude]
    if count > len(names):
        raise ValueError(f"asked for {count} distinct voices, only {len(names)} available")
    by_variant: dict[str, list[str]] = {}
    for name in (names[i] for i in rng.permutation(len(names))):
        by_variant.setdefault(name.split("+", 1)[1], []).append(name)
    variant_order = [VARIANTS[i] for i in rng.permutation(len(VARIANTS))]
    chosen: list[str] = []
    while len(chosen) < count:
        for variant in variant_order:
            if by_variant.get(variant) and len(chosen) < count:
                chosen.append(by_variant[variant].pop())
    return [Voice(name, int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
                  int(rng.integers(SPEED_RANGE[0], SPEED_RANGE[1] + 1))) for name in chosen]
