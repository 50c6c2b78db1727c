"""Frozen teachers for objectives that regress another model's features (MAM-CLAP, SupMAM-CLAP; KD).

A teacher reads the *waveform* of the student's crop and computes its own input (its own frontend, sample rate and
normalisation), so any model can teach any student. It is frozen: no gradients, always in eval mode, weights never
change. Adapters read local files only (no downloads at run time):

- `asit-hear`: any file `upstream.checkpoint.load_encoder` reads (our exports, Lightning checkpoints, official ASiT
  checkpoints; ViTs and conformers). Tokens come on the encoder's own [steps × tokens-per-step] grid.
- `hear`: a HEAR 2021 module (`module: name`, `path`: its model file, may be empty); its timestamp embeddings are a
  time sequence, so the targets carry no frequency resolution.
- `hf-clap`: a `transformers` CLAP model directory (config.json, weights, preprocessor_config.json); the audio
  tower's last hidden map (HTS-AT: a frequency × time grid) before pooling and projection. The CLAP sees at most
  its `max_length_s` (LAION-CLAP: 10 s); the part of a longer crop (a 1024-frame crop is 10.26 s) beyond it gets
  the targets of the last column.

`align_to_grid` maps a teacher's tokens onto the student's patch grid (time-major, like the ViT's tokens).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import AsitError
from .frontend import Frontend, resample

ADAPTERS = ("asit-hear", "hear", "hf-clap")


@dataclass(frozen=True)
class TeacherConfig:
    adapter: str = "asit-hear"   # asit-hear | hear | hf-clap
    path: str = ""               # the local model file (asit-hear, hear) or directory (hf-clap)
    module: str = ""             # hear: the HEAR module to import
    layer: int = -1              # asit-hear: encoder layer (0 = embeddings, -1 = the final normalised output);
                                 # hf-clap: -1 = last hidden state (other layers are not exposed)
    which: str = "teacher"       # asit-hear, pretraining checkpoints: teacher or student network


@dataclass
class TeacherOutput:
    tokens: torch.Tensor                 # [B, N', C]
    grid: tuple[int, int] | None         # (T', F') for a time-major 2-D grid; None for a time sequence [B, T', C]


class Teacher(nn.Module):
    """Frozen feature extractor over waveforms [B, S] at `sample_rate`."""

    dim: int
    sample_rate: int

    def freeze(self) -> None:
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "Teacher":
        """Always eval: Lightning's `model.train()` must not switch on the teacher's dropout or drop path."""
        return super().train(False)

    def _resampled(self, waves: torch.Tensor, rate: int) -> torch.Tensor:
        """The batch at the teacher's `rate` through the frontend's cached resampler (one per device and dtype),
        so every step does not rebuild the sinc kernel."""
        return resample(waves, self.sample_rate, rate)


class EncoderTeacher(Teacher):
    """`asit-hear` adapter: an encoder file this harness loads, with the frontend stored in it."""

    def __init__(self, config: TeacherConfig, sample_rate: int) -> None:
        super().__init__()
        from .checkpoint import load_encoder   # the checkpoint layer sits above the encoders; import at use
        loaded = load_encoder(config.path, which=config.which)
        self.encoder = loaded.encoder
        self.frontend = Frontend(loaded.frontend)
        self.sample_rate = sample_rate
        depth = int(self.encoder.depth)
        self.layer = depth if config.layer == -1 else int(config.layer)
        if not 0 <= self.layer <= depth:
            raise AsitError(f"teacher.layer {config.layer} is outside 0..{depth} (or -1) for {config.path}")
        self.dim = int(self.encoder.embed_dim)
        self.freeze()

    @torch.no_grad()
    def forward(self, waves: torch.Tensor) -> TeacherOutput:
        waves = self._resampled(waves.float(), self.frontend.config.sample_rate)
        fbank = torch.stack([self.frontend(w.cpu()) for w in waves]).to(waves.device)
        step = int(self.encoder.frames_per_step)
        # pad to the next whole step with zeros (the normalised mean), as the runtime's `padding: step`
        fbank = nn.functional.pad(fbank, (0, 0, 0, (-fbank.shape[1]) % step))
        steps = self.encoder.forward_steps(fbank, last=self.layer).steps[self.layer]   # [B, S, G, D]
        b, s, g, d = steps.shape
        return TeacherOutput(steps.reshape(b, s * g, d), (s, g))


class HearModuleTeacher(Teacher):
    """`hear` adapter: any HEAR 2021 module's `get_timestamp_embeddings` (a time sequence)."""

    def __init__(self, config: TeacherConfig, sample_rate: int) -> None:
        super().__init__()
        if not config.module:
            raise AsitError("teacher.module is empty: the hear adapter needs the HEAR module's import name")
        try:
            self.module = importlib.import_module(config.module)
        except ImportError as exc:
            raise AsitError(f"teacher.module {config.module!r} cannot be imported ({exc})") from None
        args = [config.path] if config.path else []
        self.model = self.module.load_model(*args)
        if not isinstance(self.model, nn.Module):
            raise AsitError(f"teacher.module {config.module}: load_model returned a {type(self.model).__name__}, "
                            f"not a torch module")
        self.sample_rate = sample_rate
        self.dim = int(self.model.timestamp_embedding_size)
        self.freeze()

    @torch.no_grad()
    def forward(self, waves: torch.Tensor) -> TeacherOutput:
        audio = self._resampled(waves.float(), int(self.model.sample_rate))
        embeddings, _ = self.module.get_timestamp_embeddings(audio, self.model)
        return TeacherOutput(embeddings.float(), None)


class HFClapTeacher(Teacher):
    """`hf-clap` adapter: the audio tower of a `transformers` CLAP model stored in a local directory."""

    def __init__(self, config: TeacherConfig, sample_rate: int) -> None:
        super().__init__()
        try:
            from transformers import ClapAudioModel, ClapFeatureExtractor
        except ImportError as exc:
            raise AsitError(f"teacher.adapter hf-clap needs the transformers package ({exc})") from None
        if config.layer != -1:
            raise AsitError(f"teacher.layer {config.layer}: the hf-clap adapter offers the last hidden map only (-1)")
        try:
            self.model = ClapAudioModel.from_pretrained(config.path, local_files_only=True)
            self.extractor = ClapFeatureExtractor.from_pretrained(config.path, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise AsitError(f"teacher.path {config.path}: not a transformers CLAP model directory "
                            f"({str(exc).splitlines()[0]})") from None
        self.sample_rate = sample_rate
        cfg = self.model.config
        self.dim = int(cfg.patch_embeds_hidden_size * 2 ** (len(cfg.depths) - 1))   # the last Swin stage's width
        self.freeze()

    @torch.no_grad()
    def forward(self, waves: torch.Tensor) -> TeacherOutput:
        rate = int(self.extractor.sampling_rate)
        audio = self._resampled(waves.float(), rate).cpu().numpy()
        longest = int(self.extractor.nb_max_samples)
        length = audio.shape[-1]
        # deterministic input: audio beyond the CLAP's max_length_s is cut here (its own truncation is random), and
        # the padded tail (a repeat of the clip) is cut off the output below
        inputs = self.extractor(list(audio[..., :longest]), sampling_rate=rate, return_tensors="pt",
                                truncation="rand_trunc", padding="repeatpad")
        device = next(self.model.parameters()).device
        hidden = self.model(input_features=inputs["input_features"].to(device)).last_hidden_state
        # HTS-AT's last map is [B, C, F', T'] (frequency rows, time columns) over max_length_s: keep the columns
        # that cover the crop; a crop longer than max_length_s repeats the last column over its tail
        b, c, f, t = hidden.shape
        keep = max(1, round(t * length / longest))
        hidden = hidden[..., :keep]
        if keep > t:
            hidden = torch.cat([hidden, hidden[..., -1:].expand(b, c, f, keep - t)], dim=-1)
        return TeacherOutput(hidden.permute(0, 3, 2, 1).reshape(b, keep * f, c), (keep, f))


def load_teacher(config: TeacherConfig, sample_rate: int) -> Teacher:
    """A frozen teacher from local files; a missing file or unknown adapter is one line naming both."""
    if config.adapter not in ADAPTERS:
        raise AsitError(f"teacher.adapter {config.adapter!r} unknown; available: {', '.join(ADAPTERS)}")
    if config.adapter != "hear":
        if not config.path:
            raise AsitError(f"teacher.path is empty: the {config.adapter} teacher needs a local model file; no "
                            f"weights are downloaded")
        if not Path(config.path).exists():
            raise AsitError(f"teacher.path {config.path} does not exist ({config.adapter} teacher)")
    cls: Any = {"asit-hear": EncoderTeacher, "hear": HearModuleTeacher, "hf-clap": HFClapTeacher}[config.adapter]
    try:
        return cls(config, sample_rate)
    except AsitError as exc:
        raise AsitError(f"{config.adapter} teacher: {exc}") from None


def align_to_grid(output: TeacherOutput, grid: tuple[int, int]) -> torch.Tensor:
    """Teacher tokens -> [B, Tp·Fp, C] on the student's (Tp, Fp) grid, time-major.

    A 2-D teacher map is average-pooled over the teacher cells inside each student patch (adaptive pooling; the
    identity when the grids agree; bilinear when one grid does not divide the other). A time sequence is
    averaged over the span of each student time column and repeated over the Fp frequency patches.
    """
    tokens = output.tokens
    b, _, c = tokens.shape
    tp, fp = grid
    if output.grid is None:
        seq = tokens.transpose(1, 2)                                            # [B, C, T']
        if seq.shape[-1] % tp == 0 or tp % seq.shape[-1] == 0:
            seq = nn.functional.adaptive_avg_pool1d(seq, tp)
        else:
            seq = nn.functional.interpolate(seq, size=tp, mode="linear", align_corners=False)
        return seq.transpose(1, 2)[:, :, None, :].expand(b, tp, fp, c).reshape(b, tp * fp, c)
    t, f = output.grid
    if t * f != tokens.shape[1]:
        raise AsitError(f"teacher grid {output.grid} does not match its {tokens.shape[1]} tokens")
    if (t, f) == (tp, fp):
        return tokens
    fmap = tokens.reshape(b, t, f, c).permute(0, 3, 1, 2)                       # [B, C, T', F']
    divides = (t % tp == 0 or tp % t == 0) and (f % fp == 0 or fp % f == 0)
    if divides:
        fmap = nn.functional.adaptive_avg_pool2d(fmap, (tp, fp))
    else:
        fmap = nn.functional.interpolate(fmap, size=(tp, fp), mode="bilinear", align_corners=False)
    return fmap.permute(0, 2, 3, 1).reshape(b, tp * fp, c)
