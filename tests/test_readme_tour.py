"""The README's API tour runs as written, on a tiny 30-layer model with a real peft adapter.

Only the lines that name the embedded model or cost minutes are swapped (each swap must match exactly
once, so an edited README fails here until this table is updated): everything else — every public
name, argument and path — runs as printed.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model

import affectlocus as al
from affectlocus.models import tiny_model
from affectlocus.tasks import char_tokenizer

README = Path(__file__).resolve().parents[1] / "README.md"
SWAPS = {  # README text → what the test runs instead
    'al.load_model("smollm2-135m")': "_load()",
    "steps=200)": "steps=2, batch_size=2)",
    "seeds=[0, 1])": "seeds=[0, 1], steps=2, batch_size=2)",
    ', ...]   # or a JSONL': '] * 4   # or a JSONL',
    "max_examples=64)": "max_examples=8, n_boot=50)",
}


def _tour_code() -> str:
    text = README.read_text()
    start = text.index("## API tour")
    block = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert block, "README has no python block under '## API tour'"
    code = block.group(1)
    for old, new in SWAPS.items():
        assert code.count(old) == 1, f"README tour: expected {old!r} exactly once"
        code = code.replace(old, new)
    return code


@pytest.mark.usefixtures("one_thread")
def test_readme_api_tour_runs_on_a_tiny_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = tiny_model("llama", seed=0, num_hidden_layers=30)
    tok = char_tokenizer()
    donor = get_peft_model(tiny_model("llama", seed=0, num_hidden_layers=30),
                           LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                      "up_proj", "down_proj"]))
    donor.save_pretrained(tmp_path / "runs" / "affect-lora")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    namespace = {"_load": lambda: (model, tok)}
    exec(compile(_tour_code(), str(README), "exec"), namespace)

    assert len(namespace["sites"]) == 10
    assert namespace["res"].losses and (tmp_path / "runs" / "get").exists()
    assert len(namespace["frame"]) == 6 and (tmp_path / "runs" / "sweep" / "results.csv").exists()
    assert (tmp_path / "rms.png").stat().st_size > 0 and (tmp_path / "diff-out").is_dir()
    assert (tmp_path / "runs" / "gate-only" / "adapter_config.json").exists()
    al.assert_clean(model)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
