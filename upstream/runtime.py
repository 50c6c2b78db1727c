"""The encoder runtime: waveforms of any length -> per-layer features, shared by HEAR, s3prl, probes, finetuning and
demos, for every registered encoder (upstream.encoders).

Each clip is turned into a normalised fbank by the shared `Frontend`, cut into chunks of `chunk_frames` (default:
the length the encoder was pretrained on). The last (or only) chunk is padded only to the next whole encoder step
(`padding: step`, the default: a 1 s clip costs 1 s of compute) or to the whole chunk length (`padding: chunk`),
with what the encoder's own pretraining put in padded frames (`FrontendConfig.pad_with`: the normalised mean for
this project's encoders, digital silence from a zero-padded waveform for official ASiT checkpoints). Chunks of equal
length are encoded together in mini-batches of at most `max_batch_chunks`, so memory is bounded, cost grows linearly
with duration, and a clip's result never depends on the other clips of a batch.

Per time step (a ViT's patch *column* of 16 frames = 160 ms, a conformer's 4 stacked frames = 80 ms) the runtime
returns one vector: the mean of the step's tokens (`columns: mean`; a ViT column holds 8 frequency patches) or
their concatenation (`columns: concat`, [G·D], keeping the band structure as M2D / BYOL-A / EVAR do). Step c covers
frames [c·p, c·p + p). Scene vectors pool a clip's valid steps (`pooling`: mean, max, mean+max, mean+std — the
population std over the steps, which with the `fbank_stats` floor encoder gives per-band fbank statistics) or take
the CLS token of encoders that have one (averaged over chunks, each weighted by the frames of audio it holds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from .bf16_shadow import Bf16Shadow
from .encoders import AudioEncoder, EncoderStates
from .errors import AsitError
from .frontend import Frontend, FrontendConfig, pad_or_crop
from .precision import PRECISIONS, resolve_precision

POOLINGS = ("mean", "max", "mean+max", "mean+std", "cls", "mean+cls")
COLUMNS = ("mean", "concat")
PADDINGS = ("step", "chunk")


@dataclass(frozen=True)
class RuntimeOptions:
    """How the runtime turns an encoder's tokens into features; the same names in HEAR's model options, s3prl's
    `-g` file, probe recipes and finetuning recipes."""

    pooling: str = "mean"               # scene vector: mean | max | mean+max | mean+std over steps, cls | mean+cls
    columns: str = "mean"               # one step's tokens: mean -> D features | concat -> G·D
    chunk_frames: int | None = None     # frames per encoder pass (default: the encoder's trained length)
    padding: str = "step"               # last chunk padded to the next whole step | to chunk_frames
    precision: str = "auto"             # auto (bf16 where native: upstream.precision) | fp32 | bf16 (autocast);
                                        # outputs are float32 either way
    max_batch_chunks: int = 32          # chunks per encoder call (bounds memory)

    def __post_init__(self) -> None:
        for name, allowed in (("pooling", POOLINGS), ("columns", COLUMNS), ("padding", PADDINGS),
                              ("precision", PRECISIONS)):
            if getattr(self, name) not in allowed:
                raise AsitError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.chunk_frames is not None and self.chunk_frames <= 0:
            raise AsitError(f"chunk_frames must be positive, got {self.chunk_frames}")
        if self.max_batch_chunks < 1:
            raise AsitError(f"max_batch_chunks must be at least 1, got {self.max_batch_chunks}")

    def runtime_options(self) -> "RuntimeOptions":
        """The runtime's own fields of an options type that extends them (HEAR's, the s3prl expert's)."""
        return RuntimeOptions(**{name: getattr(self, name) for name in RuntimeOptions.__dataclass_fields__})


def check_pooling(encoder: AudioEncoder, pooling: str) -> None:
    """Refuse a CLS pooling for an encoder without a CLS token, before any work."""
    if "cls" in pooling and not encoder.has_cls:
        raise AsitError(f"pooling {pooling!r} needs a CLS token, and the {encoder.arch} encoder has none (use mean, "
                        "max or mean+max)")


def step_vectors(steps: torch.Tensor, columns: str) -> torch.Tensor:
    """[B, S, G, D] tokens -> [B, S, D] (mean over the step's G tokens) or [B, S, G·D] (concatenated)."""
    if columns == "mean":
        return steps.mean(dim=2)
    if columns == "concat":
        return steps.flatten(2)
    raise AsitError(f"columns must be one of {', '.join(COLUMNS)}, got {columns!r}")


def pool_scene(vectors: torch.Tensor, valid: torch.Tensor | None, cls: torch.Tensor | None,
               pooling: str) -> torch.Tensor:
    """Step vectors [B, S, D'] (valid: bool [B, S], None = all) -> one scene vector per clip."""
    if pooling not in POOLINGS:
        raise AsitError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    if "cls" in pooling and cls is None:
        raise AsitError(f"pooling {pooling!r} needs a CLS token, and this encoder has none (use mean)")
    if valid is None:
        valid = torch.ones(vectors.shape[:2], dtype=torch.bool, device=vectors.device)
    weights = valid.to(vectors.dtype)[..., None]
    mean = (vectors * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    if pooling == "mean":
        return mean
    if pooling == "cls":
        return cls  # type: ignore[return-value]
    if pooling == "mean+cls":
        return torch.cat([mean, cls], dim=-1)  # type: ignore[list-item]
    if pooling == "mean+std":
        deviation = ((vectors - mean[:, None]) ** 2 * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return torch.cat([mean, deviation.sqrt()], dim=-1)
    peak = vectors.masked_fill(~valid[..., None], float("-inf")).amax(dim=1)
    return peak if pooling == "max" else torch.cat([mean, peak], dim=-1)


def scene_dim(encoder: AudioEncoder, pooling: str, columns: str) -> int:
    """Size of one layer's scene vector under these options."""
    step = int(encoder.embed_dim) * (encoder.tokens_per_step if columns == "concat" else 1)
    return {"mean": step, "max": step, "mean+max": 2 * step, "mean+std": 2 * step, "cls": int(encoder.embed_dim),
            "mean+cls": step + int(encoder.embed_dim)}[pooling]


@dataclass
class RuntimeOutput:
    hidden_states: list[torch.Tensor]   # per requested layer: [B, C, D'], zero beyond num_columns
    cls: list[torch.Tensor] | None      # per requested layer: [B, D], frame-weighted over chunks (CLS encoders)
    layers: list[int]                   # which layers (0 = embeddings, depth = final block)
    num_columns: torch.Tensor           # [B] valid steps per clip
    num_frames: torch.Tensor            # [B] fbank frames per clip

    def layer(self, index: int) -> int:
        """Position in hidden_states of a layer index (negative counts from the last requested)."""
        if index < 0:
            return len(self.layers) + index
        if index not in self.layers:
            raise AsitError(f"layer {index} was not computed (computed: {self.layers})")
        return self.layers.index(index)

    def column_mask(self) -> torch.Tensor:
        width = self.hidden_states[0].shape[1]
        return torch.arange(width, device=self.num_columns.device)[None, :] < self.num_columns[:, None]

    def scene(self, layer: int = -1, pooling: str = "mean") -> torch.Tensor:
        """One vector per clip from a layer's valid steps (or its CLS token): [B, D'] (mean+max: 2·D')."""
        position = self.layer(layer)
        cls = self.cls[position] if self.cls is not None else None
        return pool_scene(self.hidden_states[position], self.column_mask(), cls, pooling)

    def mean_pooled(self, layer: int = -1) -> torch.Tensor:
        """Mean over a clip's valid steps: [B, D']."""
        return self.scene(layer, "mean")


class EncoderRuntime(nn.Module):
    def __init__(self, encoder: AudioEncoder, frontend: FrontendConfig, options: RuntimeOptions | None = None
                 ) -> None:
        super().__init__()
        self.encoder = encoder.eval()
        self.frontend = Frontend(frontend)
        self.options = options = options or RuntimeOptions()
        if frontend.num_mel_bins != encoder.num_mel_bins:
            raise AsitError(f"the frontend computes {frontend.num_mel_bins} mel bins but the {encoder.arch} encoder "
                            f"takes {encoder.num_mel_bins}")
        step = encoder.frames_per_step
        self.chunk_frames = int(options.chunk_frames or encoder.trained_frames)
        if self.chunk_frames % step:
            raise AsitError(f"chunk_frames {self.chunk_frames} must be a positive multiple of {step}")
        check_pooling(encoder, options.pooling)
        self._bf16 = Bf16Shadow(self.encoder)

    def precision(self, device: torch.device | str | None = None) -> str:
        """fp32 or bf16: the `precision` option resolved for `device` (default: where the encoder's weights are)."""
        if device is None:
            device = next((p.device for p in self.encoder.parameters()), torch.device("cpu"))
        return resolve_precision(self.options.precision, device)

    @property
    def sample_rate(self) -> int:
        return self.frontend.config.sample_rate

    @property
    def depth(self) -> int:
        return self.encoder.depth

    @property
    def embed_dim(self) -> int:
        """Features per step (and per mean-pooled scene vector) under the `columns` option."""
        groups = self.encoder.tokens_per_step if self.options.columns == "concat" else 1
        return int(self.encoder.embed_dim) * groups

    @property
    def frames_per_column(self) -> int:
        return self.encoder.frames_per_step

    @property
    def column_hop_ms(self) -> float:
        return self.frames_per_column * self.frontend.config.frame_shift_ms

    def column_centers_ms(self, num_columns: int) -> torch.Tensor:
        """Centre time (ms) of each step: the midpoint between its first and last frame centres."""
        p = self.frames_per_column
        centres = self.frontend.config.frame_centers_ms(num_columns * p)
        return centres.reshape(num_columns, p).mean(dim=1)

    def features(self, waves: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Normalised fbank [T_i, F] per mono waveform at `sample_rate`."""
        return [self.frontend(w) for w in waves]


    def _encode(self, batch: torch.Tensor, last: int) -> EncoderStates:
        """One encoder pass; bf16 inference runs on cached bf16 weight copies (same numbers as autocast's own
        per-call casts, upstream.bf16_shadow), training and fp32 on the encoder's own weights."""
        if self.precision(batch.device) == "fp32":
            return self.encoder.forward_steps(batch, last=last)
        with torch.autocast(device_type=batch.device.type, dtype=torch.bfloat16):
            if not torch.is_grad_enabled():
                return self._bf16.call("forward_steps", batch, last=last)
            return self.encoder.forward_steps(batch, last=last)

    @torch.no_grad()
    def forward(self, waves: Sequence[torch.Tensor] | torch.Tensor, layers: Sequence[int] | None = None
                ) -> RuntimeOutput:
        """Encode mono waveforms (a list of [samples] or a [B, samples] tensor) -> `RuntimeOutput`.

        `layers` picks hidden states to keep (default: all, 0..depth); negative indices count from the end.
        """
        if isinstance(waves, torch.Tensor):
            if waves.ndim != 2:
                raise AsitError(f"expected waveforms [batch, samples], got shape {tuple(waves.shape)}")
            waves = list(waves)
        if not waves:
            raise AsitError("no waveforms given")
        wanted = self.resolve_layers(layers)
        feats, frames = self.laid_out(waves)
        return self.forward_features(feats, wanted, frames)

    def resolve_layers(self, layers: Sequence[int] | None) -> list[int]:
        return resolve_layers(layers, self.depth)

    def chunk_spans(self, total: int) -> list[tuple[int, int, int]]:
        """(first frame, padded length, frames of audio) of each chunk a clip of `total` fbank frames is cut into."""
        step, chunk = self.frames_per_column, self.chunk_frames
        spans = []
        for c in range(max(1, math.ceil(total / chunk))):
            held = min(chunk, total - c * chunk)
            length = chunk if self.options.padding == "chunk" else step * math.ceil(max(held, 1) / step)
            spans.append((c * chunk, length, held))
        return spans

    def layout_frames(self, total: int) -> int:
        """Frames a clip of `total` fbank frames occupies once cut into chunks and padded."""
        start, length, _ = self.chunk_spans(total)[-1]
        return start + length

    def laid_out(self, waves: Sequence[torch.Tensor], before: int = 0) -> tuple[list[torch.Tensor], list[int]]:
        """Per clip: its normalised fbank already padded to the frames its chunks cover (`Frontend.padded`, with
        `before` padded frames in front: HEAR's shifted timestamp passes), and the frames counted as the clip's."""
        config = self.frontend.config
        totals = [config.num_frames(int(w.shape[-1])) + before for w in waves]
        feats = [self.frontend.padded(w, self.layout_frames(t), before) for w, t in zip(waves, totals)]
        return feats, totals

    def _chunks(self, feats: Sequence[torch.Tensor], totals: Sequence[int]) -> list[tuple[int, torch.Tensor, int]]:
        """(clip, padded chunk [frames, F], frames of audio in it) covering every clip."""
        fill = self.frontend.config.pad_value
        return [(clip, pad_or_crop(fb, length, start, value=fill), held)
                for clip, (fb, total) in enumerate(zip(feats, totals))
                for start, length, held in self.chunk_spans(total)]

    def forward_features(self, feats: Sequence[torch.Tensor], layers: list[int],
                         num_frames: Sequence[int] | None = None) -> RuntimeOutput:
        """Normalised fbanks [T_i, F] -> `RuntimeOutput` (the chunked, batch-invariant encoder pass).

        `num_frames`: the frames of each fbank that hold audio when the fbanks come from `laid_out` (already
        padded); None pads unpadded fbanks here with the frontend's `pad_value`.
        Runs in the caller's grad mode (s3prl finetunes through it); `forward` is the no-grad inference entry."""
        p = self.frames_per_column
        device = feats[0].device
        totals = [int(f.shape[0]) for f in feats] if num_frames is None else [int(n) for n in num_frames]
        chunks = self._chunks(feats, totals)
        by_length: dict[int, list[int]] = {}
        for index, (_, chunk, _) in enumerate(chunks):
            by_length.setdefault(chunk.shape[0], []).append(index)
        last_needed = max(layers)
        slots: list[list[torch.Tensor | None]] = [[None] * len(chunks) for _ in layers]
        cls_slots: list[list[torch.Tensor | None]] = [[None] * len(chunks) for _ in layers]
        for indices in by_length.values():
            for start in range(0, len(indices), self.options.max_batch_chunks):
                part = indices[start:start + self.options.max_batch_chunks]
                batch = torch.stack([chunks[i][1] for i in part])
                states = self._encode(batch, last_needed)
                for li, layer in enumerate(layers):
                    vectors = step_vectors(states.steps[layer].float(), self.options.columns)
                    for row, i in enumerate(part):
                        slots[li][i] = vectors[row]
                        if states.cls is not None:
                            cls_slots[li][i] = states.cls[layer][row].float()
        frames = torch.tensor(totals, device=device)
        num_columns = torch.div(frames + p - 1, p, rounding_mode="floor").clamp(min=1)
        width = int(num_columns.max())
        held = torch.tensor([float(c[2]) for c in chunks], device=device).clamp(min=1.0)
        per_clip = [[i for i, c in enumerate(chunks) if c[0] == clip] for clip in range(len(feats))]
        hidden, clip_cls = [], []
        for li in range(len(layers)):
            first = slots[li][0]
            assert first is not None
            out = torch.zeros(len(feats), width, first.shape[-1], device=device, dtype=first.dtype)
            weighted_cls = []
            for clip, mine in enumerate(per_clip):
                seq = torch.cat([slots[li][i] for i in mine])[: int(num_columns[clip])]  # type: ignore[misc]
                out[clip, : seq.shape[0]] = seq
                if cls_slots[li][0] is not None:
                    w = held[mine]
                    tokens = torch.stack([cls_slots[li][i] for i in mine])  # type: ignore[misc]
                    weighted_cls.append((tokens * w[:, None]).sum(0) / w.sum())
            hidden.append(out)
            if weighted_cls:
                clip_cls.append(torch.stack(weighted_cls))
        return RuntimeOutput(hidden, clip_cls or None, layers, num_columns, frames)


def resolve_layers(layers: Sequence[int] | None, depth: int) -> list[int]:
    """Layer indices (negative from the end) -> 0..depth of an encoder with `depth` blocks; None -> all."""
    if layers is None:
        return list(range(depth + 1))
    resolved = []
    for layer in layers:
        index = layer + depth + 1 if layer < 0 else layer
        if not 0 <= index <= depth:
            raise AsitError(f"layer {layer} out of range for an encoder with {depth} blocks (0..{depth})")
        resolved.append(index)
    return resolved


def load_runtime(path: str, options: RuntimeOptions | None = None, *, device: str = "cpu",
                 which: str = "teacher", sample_rate: int | None = None) -> EncoderRuntime:
    """Any supported encoder file (export, Lightning checkpoint, official ASiT) -> a ready runtime."""
    from .checkpoint import load_encoder

    loaded = load_encoder(path, which=which, sample_rate=sample_rate)
    return EncoderRuntime(loaded.encoder, loaded.frontend, options).to(device).eval()
