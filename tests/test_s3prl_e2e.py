"""End to end through s3prl's own runner on the embedded corpus: `asit s3prl-data`, then `asit s3prl -- -m train`
and `-m evaluate` for KS (frozen upstream, weighted sum) and SID (finetuned upstream, `-f`), reading accuracies from
s3prl's own log and stdout; and `s3prl.nn.S3PRLUpstream` over the registered entry.

Each s3prl run is a subprocess (`python -m upstream.cli s3prl`), as a user runs it: s3prl's main changes process-wide
state (builtins.isinstance, logging, torch sharing strategy) that must not leak into the test session."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.results import ResultsStore
from benchmarks.s3prl_results import ingest_s3prl_runs, s3prl_cell
from tasks.api import EncoderSpec
from tasks.s3prl_data import PreparedTask, prepare_corpus
from upstream.checkpoint import read_checkpoint
from upstream.s3prl_upstream.results import last_value, read_log

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]
KS_CLASSES = {"yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "_unknown_", "_silence_"}


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory: pytest.TempPathFactory) -> dict[str, PreparedTask]:  # type: ignore[no-untyped-def]
    """`asit s3prl-data` for both tasks on the session's generated corpus (conftest `corpus`)."""
    return prepare_corpus(corpus, tmp_path_factory.mktemp("s3prl_data"))


def asit_s3prl(cwd: Path, cache: Path, *args: str) -> subprocess.CompletedProcess:
    """`asit s3prl --cache-dir CACHE -- ARGS` in a fresh process (fails the test on rc != 0)."""
    command = [sys.executable, "-m", "upstream.cli", "s3prl", "--cache-dir", str(cache), "--", *args]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, f"{' '.join(command)}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n" \
                                 f"{done.stderr[-5000:]}"
    return done


def printed_accuracy(run: subprocess.CompletedProcess, split: str) -> float:
    """The accuracy s3prl's downstream prints (`test acc: 0.52`)."""
    values = re.findall(rf"^{split} acc: (\S+)$", run.stdout, flags=re.M)
    assert values, run.stdout[-2000:]
    return float(values[-1])


def test_keyword_spotting_frozen_train_and_evaluate(prepared: dict[str, PreparedTask], tiny_encoder_file: Path,
                                                     tmp_path: Path) -> None:
    ks = prepared["speech_commands"]
    expdir = tmp_path / "ks_frozen"
    trained = asit_s3prl(tmp_path, tmp_path / "cache", "-m", "train", "-u", "asit_local", "-k",
                         str(tiny_encoder_file), "-d", "speech_commands", "-c", str(ks.configs["cpu_smoke"]),
                         "-p", str(expdir), "--device", "cpu")
    test_at_4 = last_value(expdir, "test", step=4)
    assert 0.0 <= test_at_4 <= 1.0 and printed_accuracy(trained, "test") == test_at_4
    assert {r.split for r in read_log(expdir)} == {"train", "dev", "test"}
    checkpoint = expdir / "states-4.ckpt"
    states = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert "Upstream" not in states                                   # frozen: only featurizer + downstream
    assert states["Featurizer"]["weights"].shape == (3,)              # weighted sum over embeddings + 2 blocks
    assert states["Args"].upstream == "asit_local" and not states["Args"].upstream_trainable

    evaluated = asit_s3prl(tmp_path, tmp_path / "cache", "-m", "evaluate", "-e", str(checkpoint), "--device", "cpu")
    assert last_value(expdir, "test", step=0) == test_at_4 == printed_accuracy(evaluated, "test")
    assert "The selected feature hidden_states's downsample rate is 2560" in evaluated.stderr
    predictions = (expdir / "test_predict.txt").read_text().splitlines()
    truths = dict(line.split() for line in (expdir / "test_truth.txt").read_text().splitlines())
    assert len(predictions) == len(truths) == ks.summary["s3prl_examples"]["test"] == 48
    assert set(truths.values()) == KS_CLASSES
    correct = sum(truths[name] == label for name, label in (line.split() for line in predictions))
    assert correct / len(predictions) == pytest.approx(test_at_4)
    # the run into the results store, with s3prl's own number
    store = ResultsStore(tmp_path / "results.jsonl")
    assert ingest_s3prl_runs([expdir], EncoderSpec("tiny", str(tiny_encoder_file)), store) == (1, 0)
    [row] = store.rows()
    assert (row["task"], row["mode"], row["protocol"], row["value"]) == (
        "speechcommands_v1", "s3prl-frozen", "superb/ks-v1-12class", test_at_4)


def test_speaker_identification_finetuned_train_and_evaluate(prepared: dict[str, PreparedTask],
                                                              tiny_encoder_file: Path, tmp_path: Path) -> None:
    sid = prepared["voxceleb1"]
    expdir, cache = tmp_path / "sid_finetuned", tmp_path / "cache"
    trained = asit_s3prl(tmp_path, cache, "-m", "train", "-f", "-u", "asit_local", "-k", str(tiny_encoder_file),
                         "-d", "voxceleb1", "-c", str(sid.configs["cpu_smoke"]), "-p", str(expdir), "--device", "cpu")
    test_at_4 = last_value(expdir, "test", step=4)
    assert printed_accuracy(trained, "test") == test_at_4 and printed_accuracy(trained, "dev") == \
        last_value(expdir, "dev", step=4)
    states = torch.load(expdir / "states-4.ckpt", map_location="cpu", weights_only=False)
    exported = read_checkpoint(tiny_encoder_file)["state_dict"]
    name = "blocks.1.attn.qkv.weight"
    moved = (states["Upstream"][f"runtime.encoder.{name}"] - exported[name]).abs().max()
    assert moved > 0                                                  # the encoder itself was trained

    evaluated = asit_s3prl(tmp_path, cache, "-m", "evaluate", "-e", str(expdir / "states-4.ckpt"), "--device", "cpu")
    # the finetuned upstream is restored from the checkpoint: same test accuracy as during training
    assert last_value(expdir, "test", step=0) == test_at_4 == printed_accuracy(evaluated, "test")
    cell, result, _ = s3prl_cell(expdir, EncoderSpec("tiny", str(tiny_encoder_file)))
    assert (cell.task, cell.mode, result.value) == ("voxceleb1", "s3prl-finetune", test_at_4)
    assert len((expdir / "test_predict.txt").read_text().splitlines()) == sid.summary["reader_examples"]["test"]
    # s3prl's file-list cache lives in our cache folder, keyed by data; none is written inside site-packages
    cached = sorted(p.name for p in (cache / "voxceleb1").glob("*/*.pkl"))
    assert cached == ["dev.pkl", "test.pkl", "train.pkl"]
    import s3prl

    assert not (Path(s3prl.__file__).parent / "downstream" / "voxceleb1" / ".cache").exists()


S3PRL_NN_SCRIPT = """
import json, sys, torch
from upstream.s3prl_upstream import compat, hubconf
compat.install()
import s3prl.hub
hubconf.register(s3prl.hub)
from s3prl.nn import S3PRLUpstream
model = S3PRLUpstream("asit_local", path_or_url=sys.argv[1]).eval()
lengths = torch.tensor([16000, 40000, 3000])
wavs = torch.randn(3, 40000, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    hs, hs_len = model(wavs, lengths)
    direct = model.upstream([w[:n] for w, n in zip(wavs, lengths)])["hidden_states"]
print(json.dumps({"layers": len(hs), "shape": list(hs[-1].shape), "lens": hs_len[-1].tolist(),
                  "rates": model.downsample_rates, "tensorflow_imported": "tensorflow" in sys.modules,
                  "max_diff": max(float((a - b[:, :a.shape[1]]).abs().max()) for a, b in zip(hs, direct))}))
"""


def test_s3prl_nn_upstream_over_the_registered_entry(tiny_encoder_file: Path, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", S3PRL_NN_SCRIPT, str(tiny_encoder_file)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["layers"] == 3 and result["rates"] == [2560] * 3
    assert result["shape"] == [3, 16, 64]                             # ceil(40000 / 2560): no length matching
    assert result["lens"] == [7, 16, 2] and result["max_diff"] == 0.0
    assert not result["tensorflow_imported"]                          # compat keeps TensorFlow out of s3prl


@pytest.mark.parametrize("task, trainable", [("speech_commands", False), ("voxceleb1", True)])
def test_a_conformer_encoder_through_run_downstream(prepared: dict[str, PreparedTask], tiny_conformer_file: Path,
                                                    tmp_path: Path, task: str, trainable: bool) -> None:
    """The registered conformer goes through s3prl's own runner unchanged: KS frozen, SID finetuned (-f)."""
    expdir = tmp_path / task
    trained = asit_s3prl(tmp_path, tmp_path / "cache", "-m", "train", *(["-f"] if trainable else []), "-u",
                         "asit_local", "-k", str(tiny_conformer_file), "-d", task, "-c",
                         str(prepared[task].configs["cpu_smoke"]), "-p", str(expdir), "--device", "cpu")
    assert "conformer tiny: dim 32, depth 2" in trained.stdout + trained.stderr
    states = torch.load(expdir / "states-4.ckpt", map_location="cpu", weights_only=False)
    assert states["Featurizer"]["weights"].shape == (3,)              # input projection + 2 conformer blocks
    assert ("Upstream" in states) == trainable
    evaluated = asit_s3prl(tmp_path, tmp_path / "cache", "-m", "evaluate", "-e", str(expdir / "states-4.ckpt"),
                           "--device", "cpu")
    assert "The selected feature hidden_states's downsample rate is 1280" in evaluated.stderr
    assert 0.0 <= last_value(expdir, "test", step=0) <= 1.0
