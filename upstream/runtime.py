"""The encoder runtime: waveforms of any length -> per-layer features, shared by HEAR, s3prl, probes and demos.

Each clip is turned into a normalised fbank by the shared `Frontend`, cut into chunks of `chunk_frames` (default:
the length the encoder was pretrained on), the last chunk zero-padded (the normalised mean, as in pretraining).
Chunks of all clips are encoded in mini-batches of at most `max_batch_chunks`, so memory is bounded and cost grows
linearly with duration. A clip's result never depends on the other clips of a batch.

Per time step the runtime returns one vector per patch *column* (16 frames = 160 ms): the mean of the column's
frequency-patch tokens. Column c covers frames [16c, 16c + 16); its centre is at 160·c + 87.5 ms.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from .encoder import AudioViT
from .errors import AsitError
from .frontend import Frontend, FrontendConfig, pad_or_crop


@dataclass
class RuntimeOutput:
    hidden_states: list[torch.Tensor]   # per requested layer: [B, C, D], zero beyond num_columns
    cls: list[torch.Tensor]             # per requested layer: [B, D], CLS token averaged over a clip's chunks
    layers: list[int]                   # which layers (0 = embeddings, depth = final normalised block)
    num_columns: torch.Tensor           # [B] valid columns per clip
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

    def mean_pooled(self, layer: int = -1) -> torch.Tensor:
        """Mean over a clip's valid columns (= the mean of its patch tokens): [B, D]."""
        states = self.hidden_states[self.layer(layer)]
        mask = self.column_mask().to(states.dtype)[..., None]
        return (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class EncoderRuntime(nn.Module):
    def __init__(self, encoder: AudioViT, frontend: FrontendConfig, chunk_frames: int | None = None,
                 max_batch_chunks: int = 32, precision: str = "fp32") -> None:
        super().__init__()
        self.encoder = encoder.eval()
        self.frontend = Frontend(frontend)
        patch = encoder.config.patch_size
        self.chunk_frames = int(chunk_frames or encoder.config.trained_frames)
        if self.chunk_frames <= 0 or self.chunk_frames % patch:
            raise AsitError(f"chunk_frames {self.chunk_frames} must be a positive multiple of {patch}")
        if precision not in ("fp32", "bf16"):
            raise AsitError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        self.precision = precision
        self.max_batch_chunks = max(1, int(max_batch_chunks))

    @property
    def sample_rate(self) -> int:
        return self.frontend.config.sample_rate

    @property
    def depth(self) -> int:
        return len(self.encoder.blocks)

    @property
    def embed_dim(self) -> int:
        return int(self.encoder.embed_dim)

    @property
    def frames_per_column(self) -> int:
        return self.encoder.config.patch_size

    @property
    def column_hop_ms(self) -> float:
        return self.frames_per_column * self.frontend.config.frame_shift_ms

    def column_centers_ms(self, num_columns: int) -> torch.Tensor:
        """Centre time (ms) of each column: the midpoint between its first and last frame centres."""
        p = self.frames_per_column
        centres = self.frontend.config.frame_centers_ms(num_columns * p)
        return centres.reshape(num_columns, p).mean(dim=1)

    def features(self, waves: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Normalised fbank [T_i, F] per mono waveform at `sample_rate`."""
        return [self.frontend(w) for w in waves]

    def _autocast(self, device: torch.device):  # type: ignore[no-untyped-def]
        if self.precision == "bf16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return nullcontext()

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
        feats = self.features(waves)
        return self.forward_features(feats, wanted)

    def resolve_layers(self, layers: Sequence[int] | None) -> list[int]:
        return resolve_layers(layers, self.depth)

    def forward_features(self, feats: Sequence[torch.Tensor], layers: list[int]) -> RuntimeOutput:
        """Normalised fbanks [T_i, F] -> `RuntimeOutput` (the chunked, batch-invariant encoder pass).

        Runs in the caller's grad mode (s3prl finetunes through it); `forward` is the no-grad inference entry."""
        p, chunk = self.frames_per_column, self.chunk_frames
        cols_per_chunk = chunk // p
        device = feats[0].device
        chunks, owners = [], []
        num_frames = torch.tensor([f.shape[0] for f in feats], device=device)
        for clip, fb in enumerate(feats):
            n_chunks = max(1, math.ceil(fb.shape[0] / chunk))
            for c in range(n_chunks):
                chunks.append(pad_or_crop(fb, chunk, c * chunk))
                owners.append(clip)
        last_needed = max(layers)
        per_layer_cols: list[list[torch.Tensor]] = [[] for _ in layers]
        per_layer_cls: list[list[torch.Tensor]] = [[] for _ in layers]
        for start in range(0, len(chunks), self.max_batch_chunks):
            batch = torch.stack(chunks[start:start + self.max_batch_chunks]).unsqueeze(1)
            with self._autocast(batch.device):
                states = self.encoder.forward_hidden_states(batch, last=last_needed)
            for i, layer in enumerate(layers):
                tokens = states[layer].float()
                cols = tokens[:, 1:].reshape(tokens.shape[0], cols_per_chunk, -1, tokens.shape[-1]).mean(dim=2)
                per_layer_cols[i].append(cols)
                per_layer_cls[i].append(tokens[:, 0])
        owner = torch.tensor(owners, device=device)
        num_columns = torch.div(num_frames + p - 1, p, rounding_mode="floor").clamp(min=1)
        width = int(num_columns.max())
        hidden, cls = [], []
        for i in range(len(layers)):
            cols = torch.cat(per_layer_cols[i])                      # [n_chunks, cols_per_chunk, D]
            cls_all = torch.cat(per_layer_cls[i])                    # [n_chunks, D]
            out = cols.new_zeros(len(feats), width, cols.shape[-1])
            clip_cls = cls_all.new_zeros(len(feats), cls_all.shape[-1])
            for clip in range(len(feats)):
                mine = owner == clip
                seq = cols[mine].reshape(-1, cols.shape[-1])[: int(num_columns[clip])]
                out[clip, : seq.shape[0]] = seq
                clip_cls[clip] = cls_all[mine].mean(dim=0)
            hidden.append(out)
            cls.append(clip_cls)
        return RuntimeOutput(hidden, cls, layers, num_columns, num_frames)


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


def load_runtime(path: str, *, chunk_frames: int | None = None, precision: str = "fp32", device: str = "cpu",
                 which: str = "teacher", sample_rate: int | None = None, max_batch_chunks: int = 32
                 ) -> EncoderRuntime:
    """Any supported encoder file (export, Lightning checkpoint, official ASiT) -> a ready runtime."""
    from .checkpoint import load_encoder

    loaded = load_encoder(path, which=which, sample_rate=sample_rate)
    runtime = EncoderRuntime(loaded.encoder, loaded.frontend, chunk_frames=chunk_frames,
                             max_batch_chunks=max_batch_chunks, precision=precision)
    return runtime.to(device).eval()
