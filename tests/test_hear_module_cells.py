"""Any encoder as a cell: a probe cell (or a suite's encoder) may name an installed HEAR 2021 module instead of one of
our checkpoints. The module here is tests/hear_modules/tiny_hear_module.py, which counts its own calls."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterator

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from conftest import write_scored_hear_task
from benchmarks.results import ResultsStore, cell_key, checkpoint_identity, spec_identity
from benchmarks.suite import load_suite, parse_suite, plan_suite, run_suite
from benchmarks.table import load_results, write_leaderboard
from tasks.api import HEAR_MODULE_SOURCE, EncoderSpec, TaskCell, hear_module_identity
from tasks.corpus import CorpusPaths
from tasks.datasets import Example
from tasks.embedding_cache import EmbeddingCache
from tasks.encoders import load_backbone, load_hear_module
from tasks.probe import HearModuleEmbedder
from tasks.recipes import load_recipe
from tasks.run import PROTOCOLS, run_task
from upstream.cli import main
from upstream.errors import AsitError

e2e = pytest.mark.e2e
pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODULES = Path(__file__).resolve().parent / "hear_modules"
MODULE = "tiny_hear_module"
FAST = {"num_workers": 0, "n_jobs": 1, "C": [0.1, 1.0], "max_iter": 200}


@pytest.fixture()
def tiny_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The tests' HEAR module, importable by name, with its call counters at zero."""
    monkeypatch.syspath_prepend(str(MODULES))
    import tiny_hear_module

    for name in tiny_hear_module.CALLS:
        tiny_hear_module.CALLS[name] = 0
    yield tiny_hear_module
    sys.modules.pop(MODULE, None)


@pytest.fixture()
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "weights" / "tiny.bin"
    path.parent.mkdir()
    path.write_bytes(b"tiny hear module weights, version 1")
    return path


def module_spec(model: Path | str = "", **options: object) -> EncoderSpec:
    return EncoderSpec("tiny-hear", str(model), module=MODULE, options=options)


def module_cell(spec: EncoderSpec, corpus: CorpusPaths, cache: Path, fold: int = 1, mode: str = "probe"
                ) -> TaskCell:
    return TaskCell(spec, "esc50", mode, PROTOCOLS["esc50"], seed=0, fold=fold, data_root=str(corpus.esc50),
                    overrides={**FAST, "cache_dir": str(cache)} if mode == "probe" else {"epochs": 1})


# ------------------------------------------------------------------------------------------------------ probes

@e2e
def test_a_probe_cell_on_a_hear_module_is_cached_by_module_file_and_options(
        corpus: CorpusPaths, tiny_module: ModuleType, model_file: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    calls = tiny_module.CALLS
    first = run_task(module_cell(module_spec(model_file), corpus, cache), tmp_path / "first")
    extra = first.extra
    assert first.metric == "accuracy" and 0.0 <= first.value <= 1.0
    assert extra["n_train"] == 40 and extra["n_test"] == 10 and extra["fit_on"] == "train"
    assert (extra["encoder_source"], extra["encoder_module"], extra["encoder_module_version"]) == \
        (HEAR_MODULE_SOURCE, MODULE, tiny_module.__version__)
    assert extra["layer"] == 0 and extra["layers_tried"] == [0] and extra["layer_name"] == "scene"
    assert extra["embedding_dim"] == 8 and extra["frontend"]["sample_rate"] == tiny_module.SAMPLE_RATE
    assert extra["encoder_arch"] == "TinyHearModel" and extra["pooling"] is None
    # ESC-50's clips all last 5 s: one module call per loaded batch (16 clips) of each of the 5 folds' 10 clips
    assert calls["clips"] == 50 == extra["encoder_forwards"]
    assert calls["get_scene_embeddings"] == 5 == extra["encoder_forward_calls"]
    assert extra["cache_misses"] == 5 and extra["cache_hits"] == 0
    assert extra["selected"]["layer"] == 0 and "C" in extra and (tmp_path / "first" / "predictions.npz").is_file()
    assert extra["compute"]["encoder_forward_calls"] == 5

    again = run_task(module_cell(module_spec(model_file), corpus, cache), tmp_path / "again")
    assert calls["get_scene_embeddings"] == 5, "a second probe on the same module, file and options calls it never"
    assert again.extra["cache_hits"] == 5 and again.extra["encoder_forward_calls"] == 0
    assert again.value == first.value and again.extra["selection"] == extra["selection"]
    other_fold = run_task(module_cell(module_spec(model_file), corpus, cache, fold=3), tmp_path / "fold3")
    assert calls["get_scene_embeddings"] == 5 and other_fold.extra["cache_hits"] == 5

    sidecars = [json.loads(p.read_text()) for p in cache.rglob("*.json")]
    assert len(sidecars) == 5
    assert {(s["hear_module"], s["sample_rate"], s["module_version"]) for s in sidecars} == \
        {(MODULE, tiny_module.SAMPLE_RATE, tiny_module.__version__)}
    assert {s["checkpoint_sha256"] for s in sidecars} == {hear_module_identity(module_spec(model_file))}

    run_task(module_cell(module_spec(model_file, scale=2.0), corpus, cache), tmp_path / "options")
    assert calls["get_scene_embeddings"] == 10, "other options: other embeddings, every part computed again"
    model_file.write_bytes(b"tiny hear module weights, version 2")
    changed = run_task(module_cell(module_spec(model_file), corpus, cache), tmp_path / "retrained")
    assert calls["get_scene_embeddings"] == 15 and changed.extra["cache_misses"] == 5
    assert len(list(cache.rglob("*.json"))) == 15


def test_module_embeddings_are_its_scene_embeddings_of_each_clip_at_its_rate(
        tiny_module: ModuleType, tone_folder: Path, tmp_path: Path) -> None:
    recipe = load_recipe("esc50", "probe", overrides={**FAST, "cache_dir": str(tmp_path), "batch_clips": 16})
    spec = module_spec(dim=6, sample_rate=8000)          # the tone clips are 16 kHz: resampled for the module
    examples = [Example(p, ("x",)) for p in sorted(tone_folder.glob("*.wav"))]
    lengths = {e.load(8000).shape[-1] for e in examples}
    assert len(lengths) > 1, "clips of several lengths: never padded into one batch"
    embedder = HearModuleEmbedder(spec, recipe, EmbeddingCache(tmp_path))
    got = embedder.embeddings("esc50", "fold1", examples)
    assert list(got) == [0] and got[0].shape == (len(examples), 6)
    model = tiny_module.load_model(dim=6, sample_rate=8000)
    expected = np.concatenate([tiny_module.get_scene_embeddings(e.load(8000)[None], model).numpy() for e in examples])
    np.testing.assert_allclose(got[0], expected, rtol=1e-5, atol=1e-5)
    assert embedder.forwards == {"calls": len(lengths), "chunks": len(examples)}
    assert embedder.identity(0)["sample_rate"] == 8000
    ids = {json.dumps(HearModuleEmbedder(s, recipe, EmbeddingCache(tmp_path)).identity(0), sort_keys=True)
           for s in (spec, module_spec(sample_rate=8000, dim=6), module_spec(dim=6), module_spec(dim=6, scale=1.0))}
    assert len(ids) == 3, "the key holds the options as given (an explicit default is another set of options)"


def test_module_identity_is_stable_and_changes_with_module_file_and_options(
        tiny_module: ModuleType, model_file: Path, tiny_encoder_file: Path) -> None:
    spec = module_spec(model_file, dim=8, scale=1.5)
    identity = spec_identity(spec)
    assert identity == hear_module_identity(spec) == spec_identity(module_spec(model_file, scale=1.5, dim=8))
    assert len(identity) == 64
    others = {spec_identity(module_spec(model_file, dim=8)), spec_identity(module_spec("", dim=8, scale=1.5)),
              spec_identity(dataclasses.replace(spec, module="other_module")), identity,
              spec_identity(EncoderSpec("tiny", str(tiny_encoder_file)))}
    assert len(others) == 5
    assert spec_identity(EncoderSpec("tiny", str(tiny_encoder_file))) == checkpoint_identity(tiny_encoder_file)
    # a module spec is hashable and its options read-only, like every field of the frozen spec
    same = module_spec(model_file, scale=1.5, dim=8)
    assert hash(spec) == hash(same) and spec == same
    with pytest.raises(TypeError, match="read-only"):
        spec.options["dim"] = 4                                    # type: ignore[index]
    model_file.write_bytes(b"other weights")
    assert spec_identity(spec) != identity
    cell = TaskCell(spec, "esc50", "probe", PROTOCOLS["esc50"], fold=1)
    assert cell_key(cell, spec_identity(spec)) != cell_key(cell, identity)
    with pytest.raises(AsitError, match="does not exist"):
        spec_identity(module_spec(model_file.parent / "missing.bin"))


# ---------------------------------------------------------------------------------------------------- refusals

def test_what_a_foreign_module_cannot_do_is_refused_with_the_reason(
        tiny_module: ModuleType, corpus: CorpusPaths, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for init in ("scratch", "fbank_stats"):
        with pytest.raises(AsitError, match=f"init '{init}' is not available for a HEAR module.*random-init twin"):
            EncoderSpec("x", "", init=init, module=MODULE)
    with pytest.raises(AsitError, match="options are load_model keywords of a HEAR module"):
        EncoderSpec("x", "model.pt", options={"dim": 3})
    with pytest.raises(AsitError, match="finetune is not supported for a foreign module"):
        run_task(module_cell(module_spec(), corpus, tmp_path, mode="finetune"), tmp_path / "ft")
    with pytest.raises(AsitError, match="has no backbone"):
        load_backbone(module_spec())
    with pytest.raises(AsitError, match="HEAR module no_such_hear_module_xyz cannot be imported"):
        load_hear_module(EncoderSpec("x", "", module="no_such_hear_module_xyz"))
    with pytest.raises(AsitError, match="has no load_model or get_scene_embeddings: not a HEAR 2021 module"):
        load_hear_module(EncoderSpec("x", "", module="json"))
    assert tiny_module.CALLS["load_model"] == 0 and tiny_module.CALLS["get_scene_embeddings"] == 0

    data = str(corpus.esc50)
    assert main(["probe", "esc50", "--hear-module", MODULE, "--scratch", "--data", data]) == 2
    assert "has no random-init twin" in capsys.readouterr().err
    assert main(["probe", "esc50", "--hear-module", MODULE, "--hear-options", "[1]", "--data", data]) == 2
    assert "--hear-options must be a JSON object" in capsys.readouterr().err
    assert main(["probe", "esc50", "--encoder", "x.pt", "--hear-options", "{}", "--data", data]) == 2
    assert "--hear-options applies to --hear-module only" in capsys.readouterr().err
    assert main(["probe", "esc50", "--data", data]) == 2
    assert "may name --hear-module MODULE instead of --encoder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["finetune", "esc50", "--hear-module", MODULE, "--data", data])      # no such option for finetune
    assert "unrecognized arguments: --hear-module" in capsys.readouterr().err


def test_suite_module_entries_are_checked_when_parsed(tmp_path: Path) -> None:
    (tmp_path / "esc50").mkdir()
    raw = {"name": "mod", "encoders": {"tiny-hear": {"module": MODULE}}, "data": {"esc50": str(tmp_path / "esc50")},
           "tasks": {"esc50": {"folds": [1]}}, "modes": ["probe"]}
    suite = parse_suite(raw)
    assert suite.encoders[0].spec == EncoderSpec("tiny-hear", "", module=MODULE)
    bad = [({"module": MODULE, "init": "scratch"}, ["probe"], "unknown key.*init.*no random-init twin"),
           ({"module": MODULE, "path": "x.pt"}, ["probe"], r"unknown key\(s\) path"),
           ({"module": " "}, ["probe"], "module is empty"),
           ({"module": MODULE, "options": [1]}, ["probe"], "options must be a mapping"),
           ({"module": MODULE}, ["probe", "finetune"], "probe cells only.*modes are probe, finetune"),
           ({"module": MODULE, "model": "{nowhere}/w.bin"}, ["probe"], "unknown or malformed variable")]
    for entry, modes, message in bad:
        with pytest.raises(AsitError, match=message):
            parse_suite({**raw, "encoders": {"tiny-hear": entry}, "modes": modes})
    missing = parse_suite({**raw, "encoders": {"tiny-hear": {"module": MODULE, "model": str(tmp_path / "no.bin")}}})
    with pytest.raises(AsitError, match=r"encoders.tiny-hear.model: HEAR module model file .*no.bin does not exist"):
        plan_suite(missing)


# ------------------------------------------------------------------------------------------------------ suites

@e2e
def test_a_suite_with_a_module_encoder_plans_runs_resumes_and_tabulates(
        corpus: CorpusPaths, tiny_module: ModuleType, model_file: Path, tiny_encoder_file: Path,
        tmp_path: Path) -> None:
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(yaml.safe_dump({
        "name": "foreign",
        "vars": {"weights": str(model_file.parent), "root": str(tmp_path)},
        "encoders": {
            "tiny": {"path": str(tiny_encoder_file), "pretraining": "none (random init, tests)"},
            "tiny-hear": {"module": MODULE, "model": "{weights}/tiny.bin", "options": {"dim": 6, "scale": 2.0},
                          "pretraining": "whatever its authors used"},
            "tiny-hear-nofile": {"module": MODULE},
        },
        "data": {"esc50": str(corpus.esc50)},
        "tasks": {"esc50": {"folds": [1]}},
        "modes": ["probe"],
        "overrides": {"probe": {**FAST, "cache_dir": str(tmp_path / "cache")}},      # (overrides take no vars)
        "results": "{root}/results.jsonl",
        "work_dir": "{root}/work",
    }))
    suite = load_suite(suite_file)
    hear = next(e for e in suite.encoders if e.spec.name == "tiny-hear")
    assert hear.spec == EncoderSpec("tiny-hear", str(model_file), module=MODULE, options={"dim": 6, "scale": 2.0})
    assert hear.pretraining == "whatever its authors used"
    cells = {c.cell.encoder.name: c for c in plan_suite(suite)}
    assert len(cells) == 3
    assert cells["tiny-hear"].checkpoint_sha256 == spec_identity(hear.spec)
    assert cells["tiny"].checkpoint_sha256 == checkpoint_identity(tiny_encoder_file)
    assert len({c.checkpoint_sha256 for c in cells.values()}) == 3
    # a module encoder in the suite leaves our encoder's key as it was
    alone = parse_suite({**yaml.safe_load(suite_file.read_text()), "encoders": {"tiny": {
        "path": str(tiny_encoder_file), "pretraining": "none (random init, tests)"}}}, str(suite_file))
    assert [c.key for c in plan_suite(alone)] == [cells["tiny"].key]

    report = run_suite(suite, progress=False, log=lambda message: None)
    assert report.complete and len(report.succeeded) == 3, report.failed
    assert tiny_module.CALLS["get_scene_embeddings"] == 2 * 5         # two module encoders, five folds each
    rows = {row["encoder"]: row for row in ResultsStore(suite.results).rows()}
    module_row = rows["tiny-hear"]
    assert module_row["checkpoint_sha256"] == spec_identity(hear.spec) and module_row["key"] == cells["tiny-hear"].key
    assert module_row["checkpoint"] == str(model_file)
    assert module_row["extra"]["encoder_module"] == MODULE and module_row["extra"]["embedding_dim"] == 6
    assert module_row["extra"]["encoder_module_options"] == {"dim": 6, "scale": 2.0}
    assert module_row["config"]["encoder"]["module"] == MODULE
    assert rows["tiny-hear-nofile"]["checkpoint"] == "" and rows["tiny-hear-nofile"]["checkpoint_file_sha256"] == ""
    ours = rows["tiny"]["extra"]
    assert ours["encoder_source"] == "export" and "encoder_module" not in ours and ours["pooling"] == "mean+std"

    again = run_suite(load_suite(suite_file), progress=False, log=lambda message: None)
    assert again.skipped == 3 and not again.succeeded
    assert tiny_module.CALLS["get_scene_embeddings"] == 10

    table = load_results([suite.results])
    assert set(table["encoder"]) == {"tiny", "tiny-hear", "tiny-hear-nofile"}
    write_leaderboard([suite.results], tmp_path / "leaderboard", reference=False)
    text = (tmp_path / "leaderboard" / "leaderboard.md").read_text()
    assert "tiny-hear" in text and "whatever its authors used" in text


@e2e
def test_asit_probe_with_hear_module(corpus: CorpusPaths, tiny_module: ModuleType, model_file: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    args = ["probe", "esc50", "--hear-module", MODULE, "--encoder", str(model_file), "--hear-options",
            '{"dim": 5}', "--data", str(corpus.esc50), "--fold", "2", "--work-dir", str(tmp_path / "work"),
            "num_workers=0", "n_jobs=1", "C=[1.0]", "max_iter=200", f"cache_dir={tmp_path / 'cache'}"]
    assert main(args) == 0
    assert "asit probe: esc50 fold 2 accuracy" in capsys.readouterr().out
    result = json.loads((tmp_path / "work" / "result.json").read_text())
    assert result["extra"]["encoder_module"] == MODULE and result["extra"]["embedding_dim"] == 5
    assert tiny_module.CALLS["load_model"] == 1 and tiny_module.CALLS["get_scene_embeddings"] == 5


# ------------------------------------------------------------------------------------------------------- HEAR

@e2e
def test_heareval_runs_a_foreign_module_through_our_runner_commands(corpus: CorpusPaths, tiny_module: ModuleType,
                                                                   model_file: Path, tmp_path: Path) -> None:
    """heareval's own embeddings runner takes any module name: `asit_hear.runners` passes the spec's module and
    model file (none: no --model) instead of asit_hear, and what heareval stores is the module's own embedding."""
    from asit_hear.runners import compute_embeddings, embeddings_command, run_command
    from tasks.hear_tasks import build_tasks

    tasks = build_tasks({"speechcommands_v2": corpus.speechcommands_v2}, tmp_path / "tasks", log=lambda m: None)
    task = tasks["speechcommands_v2"]
    env = {"PYTHONPATH": f"{MODULES}:{Path(__file__).resolve().parent.parent}", "CUDA_VISIBLE_DEVICES": ""}
    options = {"dim": 4, "scale": 2}
    command = embeddings_command(model_file, tmp_path / "tasks", task.name, options, module=MODULE)
    assert command[3:6] == [MODULE, "--model", str(model_file)]
    run_command(command, tmp_path, tmp_path / "embeddings.log", env)
    folder = tmp_path / "embeddings" / f"{MODULE}-dim=4-scale=2" / task.name
    wav = sorted((task / "16000" / "test").glob("*.wav"))[0]
    stored = np.load(folder / "test" / f"{wav.name}.embedding.npy")
    audio, rate = sf.read(str(wav), dtype="float32")
    model = tiny_module.load_model(str(model_file), **options)
    mine = tiny_module.get_scene_embeddings(torch.from_numpy(audio)[None], model)[0].numpy()
    assert rate == 16000 and stored.shape == (4,)
    np.testing.assert_allclose(stored, mine, atol=1e-5, rtol=0)
    # without options or a model file: the runner's defaults, in embeddings/<module>
    (tmp_path / "bare").mkdir()
    out = compute_embeddings(None, tmp_path / "tasks", tmp_path / "bare", tmp_path / "bare.log", env, module=MODULE)
    assert out == tmp_path / "bare" / "embeddings" / MODULE and (out / task.name / ".done.embeddings").is_file()


def test_hear_scores_of_a_module_are_ingested_under_its_probe_identity(model_file: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """`asit bench --hear-scores ... --hear-module M` keys heareval's rows like the module's probe rows, so one
    encoder is one row label in the table; the options must be JSON."""
    write_scored_hear_task(tmp_path / "embeddings" / "tiny_hear_module" / "esc50")
    store = tmp_path / "hear.jsonl"
    assert main(["bench", "--hear-scores", str(tmp_path / "embeddings"), "--encoder", "tiny",
                 "--checkpoint", str(model_file), "--hear-module", "tiny_hear_module",
                 "--hear-options", '{"dim": 8}', "--results", str(store)]) == 0
    rows = ResultsStore(store).rows()
    spec = EncoderSpec("tiny", str(model_file), module="tiny_hear_module", options={"dim": 8})
    assert rows and {r["checkpoint_sha256"] for r in rows} == {spec_identity(spec)}
    assert spec_identity(spec) != checkpoint_identity(model_file)       # not the file's bytes alone
    assert main(["bench", "--hear-scores", str(tmp_path / "embeddings"), "--encoder", "tiny",
                 "--hear-module", "tiny_hear_module", "--hear-options", "[1]", "--results", str(store)]) == 2
    assert "--hear-options must be a JSON object" in capsys.readouterr().err
