"""``affectlocus mediate|attribute|spectrum`` on a tiny Llama saved with a character tokenizer and a
real peft adapter: files written, summaries, exit codes and the one error handler's messages."""
from __future__ import annotations

import json

import pytest
import torch

from affectlocus._runlog import read_runlog
from affectlocus.cli import main
from affectlocus.models import tiny_model, tiny_model_dir
from affectlocus.tasks.prompts import char_tokenizer
from affectlocus.witnesses import WitnessTable

pytestmark = pytest.mark.usefixtures("one_thread")
PNG = b"\x89PNG\r\n\x1a\n"
TEXTS = ["I loved every minute of it", "what a sad, grey day", "a boring film", "joy!"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny Llama (vocabulary sized to the char tokenizer) with the tokenizer saved beside it."""
    tok = char_tokenizer()
    path = tiny_model_dir(tmp_path_factory.mktemp("model") / "base", "llama", vocab_size=len(tok))
    tok.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def adapter(base, tmp_path_factory):
    """A random peft LoRA (non-zero A and B) on every projection of the tiny model."""
    import peft
    torch.manual_seed(0)
    cfg = peft.LoraConfig(r=2, lora_alpha=4, init_lora_weights=False,
                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                          "down_proj"])
    model = peft.get_peft_model(tiny_model("llama", vocab_size=len(char_tokenizer())), cfg)
    path = tmp_path_factory.mktemp("adapter") / "lora"
    model.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    (folder / "texts.txt").write_text("\n".join(TEXTS) + "\n\n")
    (folder / "texts.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    return folder


def _png(path) -> None:
    assert path.read_bytes().startswith(PNG), path


def _ok(out, kind: str, heatmaps: tuple[str, ...]) -> WitnessTable:
    table = WitnessTable.load(out / f"{kind}.json")
    assert table.kind == kind and len(table) == 14  # 7 modules × 2 layers
    assert (out / f"{kind}.csv").read_text().startswith("layer,module,")
    for column in heatmaps:
        _png(out / f"heatmap_{column}.png")
    events = read_runlog(out)
    assert events[0]["event"] == "start" and events[-1]["status"] == "ok"
    assert any(e["event"] == "summary" and e["kind"] == kind for e in events)
    return table


def test_mediate_on_a_task_kl_and_label(base, adapter, tmp_path, capsys):
    out = tmp_path / "med"
    args = ["mediate", str(base), str(adapter), "--data", "rt-polarity", "--n", "4", "--max-length", "48",
            "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "modules by sufficiency" in text and "modules by necessity" in text and "wrote" in text
    table = _ok(out, "mediation", ("sufficiency", "necessity"))
    assert table.meta["metric"] == "kl" and table.meta["n"] == 4 and "rt-polarity" in table.meta["data"]
    assert main([*args, "--metric", "label", "--out", str(tmp_path / "label"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "wrote" not in captured.out and "modules by sufficiency" in captured.out and "mediate" not in captured.err
    assert WitnessTable.load(tmp_path / "label" / "mediation.json").meta["metric"] == "label_logodds"


@pytest.mark.parametrize("name", ["texts.txt", "texts.jsonl"])
def test_attribute_on_texts_prints_total_and_completeness(base, adapter, texts, tmp_path, capsys, name):
    out = tmp_path / "attr"
    assert main(["attribute", str(base), str(adapter), "--data", str(texts / name), "--steps", "4",
                 "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "completeness error" in text and "modules by attribution" in text
    table = _ok(out, "attribution", ("attribution",))
    assert table.meta["n"] == len(TEXTS) and table.meta["steps"] == 4
    assert f"completeness error = {table.meta['error']:.2%}" in text and f"= {table.meta['total']:.4g}" in text


def test_attribute_on_a_task_scores_answers_only(base, adapter, tmp_path, capsys):
    out = tmp_path / "task"  # labels that share a first token are fine outside --metric label
    assert main(["attribute", str(base), str(adapter), "--data", "tweets-sentiment", "--n", "2", "--steps", "2",
                 "--modules", "gate", "--layers", "1", "--max-length", "48", "--out", str(out), "--quiet"]) == 0
    table = WitnessTable.load(out / "attribution.json")
    assert [(r["layer"], r["module"]) for r in table.rows] == [(1, "gate")]
    assert "answer tokens" in table.meta["data"] and "tweets-sentiment" in table.meta["data"]
    assert table.meta["tokens"] <= 2 * 48  # prompts lose tokens from the left, answers stay


def test_spectrum(base, adapter, tmp_path, capsys):
    out = tmp_path / "spec"
    assert main(["spectrum", str(base), str(adapter), "--k", "2", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "effective_rank per module" in text and "intruders per module" in text
    table = _ok(out, "spectrum", ("effective_rank", "intruders"))
    assert {r["method"] for r in table.rows} == {"factors"} and all(0 < r["rank"] <= 2 for r in table.rows)
    assert not any(e["event"] == "model" for e in read_runlog(out))  # streamed
    loaded = tmp_path / "loaded"  # --dtype loads BASE as a model first: the same spectrum
    assert main(["spectrum", str(base), str(adapter), "--k", "2", "--dtype", "float32", "--device", "cpu",
                 "--layers", "1", "--out", str(loaded), "--quiet"]) == 0
    assert any(e["event"] == "model" and e["dtype"] == "float32" for e in read_runlog(loaded))
    assert "note: the adapter also updates 7 sites outside the selection" in capsys.readouterr().out
    again = WitnessTable.load(loaded / "spectrum.json")
    assert again.rows == [r for r in table.rows if r["layer"] == 1]


def test_errors_are_typed_and_name_the_problem(base, adapter, texts, tmp_path, capsys):
    def err(argv: list[str]) -> str:
        assert main(argv) == 2
        return capsys.readouterr().err
    common = [str(base), str(adapter), "--out", str(tmp_path / "x")]
    message = err(["mediate", *common])
    assert "ConfigError" in message and "--data is required" in message and "rt-polarity" in message
    message = err(["attribute", *common, "--data", "rt-polarity", "--modules", "gate,nope"])
    assert "SiteError" in message and "nope" in message
    assert "ConfigError" in err(["mediate", *common, "--data", str(texts / "texts.txt"), "--metric", "label"])
    assert "unknown task 'nope'" in err(["mediate", *common, "--data", "nope"])
    message = err(["mediate", *common, "--data", "tweets-sentiment", "--n", "3", "--metric", "label"])
    assert "DataError" in message and "start with the same token" in message  # 'n'egative, 'n'eutral
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"txt": 1}\n')
    assert "bad.jsonl:2" in err(["attribute", *common, "--data", str(bad)])
    assert "--data file not found" in err(["attribute", *common, "--data", str(tmp_path / "none.txt")])
    assert "SiteError" in err(["spectrum", *common, "--layers", "7"])
    assert "SourceError" in err(["mediate", str(base), str(tmp_path / "missing"), "--data", "rt-polarity",
                                 "--n", "2", "--out", str(tmp_path / "y")])
    (tmp_path / "d.csv").write_text("a,b\n")
    assert "must be .txt" in err(["attribute", *common, "--data", str(tmp_path / "d.csv")])
    bare = tiny_model_dir(tmp_path / "bare", "llama", vocab_size=len(char_tokenizer()))  # no tokenizer files
    with pytest.warns(UserWarning):
        message = err(["attribute", str(bare), str(adapter), "--data", str(texts / "texts.txt"),
                       "--out", str(tmp_path / "z")])
    assert "DataError" in message and "no tokenizer" in message
    assert not (tmp_path / "x" / "mediation.csv").exists()
