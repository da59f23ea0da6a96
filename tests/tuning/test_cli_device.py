"""``--device`` / ``--dtype`` / ``--device-map`` end to end: one shared helper, real bf16 runs of ``train``,
``sweep``, ``bench`` and ``diff`` on tiny models, typed errors for bad values (``--device cuda`` on a
machine without CUDA), the study's flags overriding its config, and a trainer that trains where the
model is (a CPU model is not moved to a GPU behind the caller's back)."""
from __future__ import annotations

import argparse
import json

import pytest
import torch

import affectlocus.models as models
from affectlocus.cli import main
from affectlocus.errors import ModelLoadError
from affectlocus.models import tiny_model, tiny_model_dir
from affectlocus.models.cli_args import (DEVICE_HELP, DEVICE_MAP_HELP, DTYPE_HELP, add_device_args,
                                         device_kwargs)
from affectlocus.tuning import save_pairs, train
from affectlocus.tuning.checkpoint import read_json, read_jsonl

FAST = ["--r", "2", "--steps", "2", "--batch-size", "4", "--lr", "1e-2", "--quiet"]
BF16 = ["--device", "cpu", "--dtype", "bfloat16"]
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


@pytest.fixture
def folder(tok, tmp_path):
    path = tiny_model_dir(tmp_path / "model", "llama", vocab_size=len(tok))
    tok.save_pretrained(str(path))
    return path


@pytest.fixture
def loads(monkeypatch):
    """Every real ``load_model`` call: (name, kwargs, dtype and device of the loaded model)."""
    real, calls = models.load_model, []

    def recording(name, *args, **kwargs):
        model, tok = real(name, *args, **kwargs)
        p = next(model.parameters())
        calls.append((str(name), dict(kwargs), p.dtype, p.device))
        return model, tok
    monkeypatch.setattr(models, "load_model", recording)
    return calls


@pytest.fixture
def chunk_dtypes(monkeypatch):
    """The dtypes of every weight chunk the diff's statistics receive."""
    from affectlocus.diff.stats import SiteAccumulator
    seen: set = set()
    pair, base_only = SiteAccumulator.add_pair, SiteAccumulator.add_base

    def add_pair(self, row0, base, tuned):
        seen.update({base.dtype, tuned.dtype})
        return pair(self, row0, base, tuned)

    def add_base(self, row0, base, *rest):
        seen.add(base.dtype)
        return base_only(self, row0, base, *rest)
    monkeypatch.setattr(SiteAccumulator, "add_pair", add_pair)
    monkeypatch.setattr(SiteAccumulator, "add_base", add_base)
    return seen


def _parser() -> argparse.ArgumentParser:
    return add_device_args(argparse.ArgumentParser(prog="x"))


# ---- the helper --------------------------------------------------------------------------------------
def test_helper_adds_three_options_and_returns_only_those_given():
    p = _parser()
    assert device_kwargs(p.parse_args([])) == {}
    assert device_kwargs(p.parse_args(BF16)) == {"device": "cpu", "dtype": "bfloat16"}
    assert device_kwargs(p.parse_args(["--device-map", "auto"])) == {"device_map": "auto"}
    assert device_kwargs(p.parse_args(["--device-map", '{"": "cpu"}'])) == {"device_map": {"": "cpu"}}
    assert device_kwargs(device="cpu") == {"device": "cpu"}
    text = p.format_help().replace("\n", " ")
    for help_text in (DEVICE_HELP, DTYPE_HELP, DEVICE_MAP_HELP):
        assert " ".join(help_text.split()[:4]) in " ".join(text.split())


@pytest.mark.parametrize("argv, names", [
    (["--dtype", "int7"], ["bfloat16", "float16", "float32"]),
    (["--device", "gpu"], ["'cpu'", "'cuda'"]),
    (["--device-map", "everywhere"], ["auto", "balanced", "sequential"]),
    (["--device-map", "{nope"], ["JSON"]),
    (["--device", "cpu", "--device-map", "auto"], ["either --device or --device-map"]),
])
def test_bad_values_are_typed_errors_naming_what_is_allowed(argv, names):
    with pytest.raises(ModelLoadError) as err:
        device_kwargs(_parser().parse_args(argv))
    assert all(n in str(err.value) for n in names), str(err.value)


@no_cuda
@pytest.mark.parametrize("command", [
    ["train", "--control", "12", "--out", "{tmp}/t"],
    ["sweep", "--control", "12", "--out", "{tmp}/s"],
    ["bench", "--out", "{tmp}/b"],
    ["diff", "{model}", "{model}", "--out", "{tmp}/d"],
    ["study", "--config", "{tmp}/study.toml"],
    ["demo", "--out", "{tmp}/demo"],
])
def test_cuda_without_cuda_is_a_clear_error_on_every_cli(command, folder, tmp_path, capsys):
    (tmp_path / "study.toml").write_text(f'model = "{folder}"\nout = "{tmp_path}/st"\n')
    argv = [a.format(tmp=tmp_path, model=folder) for a in command]
    if command[0] in ("train", "sweep", "bench"):
        argv += ["--model", str(folder)]
    assert main([*argv, "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "ModelLoadError" in err and "no CUDA" in err and "Traceback" not in err
    assert not (tmp_path / "st").exists() and not (tmp_path / "demo").exists()  # failed before any work


# ---- train / sweep -----------------------------------------------------------------------------------
def test_train_cli_bf16_on_cpu_then_diff_of_its_adapter(folder, pairs, tmp_path, capsys, loads, chunk_dtypes):
    data = save_pairs(pairs, tmp_path / "train.jsonl")
    run = tmp_path / "run"
    assert main(["train", "--model", str(folder), "--data", str(data), "--out", str(run), *FAST, *BF16]) == 0
    assert "trained 2 steps" in capsys.readouterr().out
    assert loads == [(str(folder), {"device": "cpu", "dtype": "bfloat16"}, torch.bfloat16, torch.device("cpu"))]
    assert (run / "adapter_model.safetensors").is_file()
    assert read_json(run / "run.json")["status"] == "finished"
    assert all(r["loss"] == r["loss"] for r in read_jsonl(run / "log.jsonl"))  # finite, not NaN
    # the same run without --device resumes (loads) it: the device is not part of a run's identity
    assert main(["train", "--model", str(folder), "--data", str(data), "--out", str(run), *FAST,
                 "--dtype", "bfloat16"]) == 0
    assert "already finished" in capsys.readouterr().out
    # diff of base vs that adapter: still streamed (nothing loaded), the base's chunks cast to bf16
    loads.clear()
    assert main(["diff", str(folder), str(run), "--out", str(tmp_path / "d"), "--no-progress", *BF16]) == 0
    assert loads == [] and chunk_dtypes == {torch.bfloat16}
    meta = json.loads((tmp_path / "d" / "diff.json").read_text())["meta"]
    assert meta["placement"] == {"device": "cpu", "dtype": "bfloat16"}
    assert "layers.0.gate" in capsys.readouterr().out


def test_sweep_cli_passes_device_and_dtype(folder, pairs, tmp_path, capsys, loads):
    data = save_pairs(pairs, tmp_path / "train.jsonl")
    assert main(["sweep", "--model", str(folder), "--data", str(data), "--out", str(tmp_path / "sw"),
                 "--sets", "gate", "--seeds", "0", *FAST, *BF16]) == 0
    assert "1 cells" in capsys.readouterr().out
    assert [(c[1], c[2]) for c in loads] == [({"device": "cpu", "dtype": "bfloat16"}, torch.bfloat16)]
    row, = read_jsonl(tmp_path / "sw" / "results.jsonl")
    assert row["cell"] == "gate-seed0" and row["eval_loss"] == row["eval_loss"]
    assert "device" not in read_json(tmp_path / "sw" / "sweep.json")["identity"]


def test_train_api_device_moves_and_loads(make, tok, pairs, tmp_path, folder):
    model = make("llama").to(torch.bfloat16)
    res = train(model, tok, pairs, tmp_path / "a", r=2, steps=1, batch_size=4, progress=False, device="cpu")
    assert next(res.model.parameters()).device.type == "cpu" and res.losses
    assert "device" not in read_json(tmp_path / "a" / "run.json")["identity"]
    res = train(str(folder), None, pairs, tmp_path / "b", r=2, steps=1, batch_size=4, progress=False,
                device="cpu")
    assert next(res.model.parameters()).device.type == "cpu" and len(res.losses) == 1


@no_cuda
def test_train_api_bad_device_is_typed(make, tok, pairs, tmp_path):
    with pytest.raises(ModelLoadError, match="no CUDA"):
        train(make("llama"), tok, pairs, tmp_path / "x", r=2, steps=1, progress=False, device="cuda")


def test_cpu_model_trains_on_cpu_even_when_a_gpu_exists(make, tok, pairs, tmp_path, monkeypatch):
    """Before: ``Accelerator(cpu=not torch.cuda.is_available())`` moved a CPU model to CUDA (and turned
    bf16 autocast and gradient checkpointing on). Now the model's device decides."""
    from accelerate.state import PartialState

    import affectlocus.tuning.placement as placement
    import affectlocus.tuning.trainer as trainer
    made = []

    class Recorder:
        def __init__(self, **kwargs):
            made.append(kwargs)
    monkeypatch.setattr("accelerate.Accelerator", Recorder)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(PartialState, "_shared_state", {})  # a fresh process
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    placement.accelerator(torch.device("cpu"))
    placement.accelerator(torch.device("cuda", 0))
    monkeypatch.setenv("WORLD_SIZE", "2")  # accelerate launch: unchanged, accelerate places the model
    placement.accelerator(torch.device("cpu"))
    assert [m["cpu"] for m in made] == [True, False, False]
    assert all(m["mixed_precision"] == "no" for m in made)
    monkeypatch.undo()

    seen = {}
    real_run = trainer._run

    def spy(prep, data, out, cfg, ident, acc, progress, callback, device, bf16, *rest):
        seen.update(device=device, bf16=bf16)
        return real_run(prep, data, out, cfg, ident, acc, progress, callback, device, bf16, *rest)
    monkeypatch.setattr(trainer, "_run", spy)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    res = train(make("llama"), tok, pairs, tmp_path / "c", r=2, steps=1, batch_size=4, progress=False)
    assert seen == {"device": torch.device("cpu"), "bf16": False}
    assert next(res.model.parameters()).device.type == "cpu"


# ---- bench --------------------------------------------------------------------------------------------
def test_bench_cli_bf16(tmp_path, loads, capsys):
    from affectlocus.tasks.prompts import char_tokenizer
    from affectlocus.evaluation.cli import main as bench_main
    tiny_model("llama", seed=2).save_pretrained(tmp_path / "m")
    char_tokenizer().save_pretrained(tmp_path / "m")
    argv = ["--model", str(tmp_path / "m"), "--tasks", "rt-polarity", "--max-examples", "4", "--n-boot", "20",
            "--shots-per-label", "1", "--batch-size", "4", "--out", str(tmp_path / "out"), "--no-progress"]
    assert bench_main([*argv, *BF16]) == 0
    assert [(c[1], c[2]) for c in loads] == [({"device": "cpu", "dtype": "bfloat16"}, torch.bfloat16)]
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert scores["tasks"]["rt-polarity"]["n"] == 4
    assert main(["bench", *argv, "--dtype", "float8"]) == 2
    assert "unknown dtype 'float8'" in capsys.readouterr().err


# ---- diff of two full checkpoints ----------------------------------------------------------------------
def test_diff_cli_casts_both_checkpoints_to_bf16(tmp_path, loads, chunk_dtypes, capsys):
    base = tiny_model("llama", seed=0)
    base.save_pretrained(tmp_path / "base")
    with torch.no_grad():  # a change far below bf16's resolution (8 bits of mantissa)
        base.model.layers[1].mlp.up_proj.weight.mul_(1 + 1e-6)
    base.save_pretrained(tmp_path / "tuned")
    argv = ["diff", str(tmp_path / "base"), str(tmp_path / "tuned"), "--modules", "up", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "fp32")]) == 0
    assert chunk_dtypes == {torch.float32}
    chunk_dtypes.clear()
    assert main([*argv, "--out", str(tmp_path / "bf16"), *BF16]) == 0
    assert chunk_dtypes == {torch.bfloat16} and loads == []  # streamed, cast chunk by chunk
    fp32, bf16 = (json.loads((tmp_path / d / "diff.json").read_text()) for d in ("fp32", "bf16"))
    assert "placement" not in fp32["meta"] and bf16["meta"]["placement"]["dtype"] == "bfloat16"

    def unchanged(doc, layer):  # fraction of elements with ΔW == 0
        return next(s["values"]["unchanged"] for s in doc["sites"] if s["layer"] == layer)
    assert unchanged(fp32, 1) < 0.01 and unchanged(bf16, 1) > 0.99 and unchanged(bf16, 0) == 1.0
    capsys.readouterr()
    # --device-map: both checkpoints are loaded as models (placed by accelerate), in the dtype asked
    assert main([*argv, "--out", str(tmp_path / "map"), "--device-map", "cpu", "--dtype", "bfloat16"]) == 0
    assert [(c[1], c[2]) for c in loads] == [({"device_map": "cpu", "dtype": "bfloat16"}, torch.bfloat16)] * 2
    assert "(loaded with dtype=bfloat16, device_map=cpu)" in capsys.readouterr().out


# ---- study / demo --------------------------------------------------------------------------------------
def test_study_and_demo_flags_override_the_config(tmp_path, monkeypatch):
    import affectlocus.study.cli as study_cli
    got = []
    monkeypatch.setattr(study_cli, "_run", lambda cfg, progress=True: got.append(cfg) or 0)
    toml = tmp_path / "study.toml"
    toml.write_text('model = "m"\nout = "o"\ndtype = "float32"\ndevice_map = "auto"\n')
    assert main(["study", "--config", str(toml), "--no-progress"]) == 0
    assert (got[-1].dtype, got[-1].device, got[-1].device_map) == ("float32", None, "auto")
    assert main(["study", "--config", str(toml), *BF16]) == 0
    assert (got[-1].dtype, got[-1].device, got[-1].device_map) == ("bfloat16", "cpu", None)
    toml.write_text('model = "m"\nout = "o"\ndevice = "cpu"\n')
    assert main(["study", "--config", str(toml), "--device-map", "sequential"]) == 0
    assert (got[-1].device, got[-1].device_map) == (None, "sequential")
    assert main(["demo", "--dtype", "float16", "--out", str(tmp_path / "demo")]) == 0
    assert (got[-1].dtype, got[-1].out) == ("float16", str(tmp_path / "demo"))
    assert got[-1].fingerprint() != study_cli.quick().fingerprint()  # results cached per dtype
    assert main(["demo", "--dtype", "int7"]) == 2 and len(got) == 4
