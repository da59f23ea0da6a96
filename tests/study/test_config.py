"""Study configuration: TOML loading and typed errors naming the bad field."""
from __future__ import annotations

import pytest

from affectlocus.study import ConfigError, StudyConfig, full, quick


def test_toml_round_trip(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text('[study]\nmodel = "smollm2-135m"\nsteps = 3\nseeds = [0, 1]\ntargeted = ["q", "gate_proj"]\n')
    cfg = StudyConfig.from_toml(path, out=str(tmp_path / "run"))
    assert cfg.steps == 3 and cfg.seeds == [0, 1] and cfg.out == str(tmp_path / "run")
    assert cfg.fingerprint() == StudyConfig.from_toml(path, out="elsewhere").fingerprint()


@pytest.mark.parametrize("text,match", [("stepz = 3", "unknown fields"), ("steps = 0", "below its minimum"),
                                        ('targeted = ["gates"]', "unknown module"), ("seeds = []", "at least one"),
                                        ('skip = ["train"]', "unknown steps"), ("steps = [", "not valid TOML"),
                                        ('unibench_mode = "guess"', "unibench_mode"),
                                        ('unibench_datasets = ["MER2025"]', "unknown dataset 'MER2025'.*MER2023"),
                                        ("unibench_max = 0", "below its minimum"),
                                        ('unibench_sets = ["gat"]', "unknown module")])
def test_bad_configs(tmp_path, text, match):
    path = tmp_path / "bad.toml"
    path.write_text(text + "\n")
    with pytest.raises(Exception, match=match):
        StudyConfig.from_toml(path)


def test_unibench_fields(tmp_path):
    path = tmp_path / "cfg" / "study.toml"
    path.parent.mkdir()
    path.write_text('unibench = "data/unibench.toml"\nunibench_datasets = ["mosi", "mer2023"]\n')
    cfg = StudyConfig.from_toml(path)
    assert cfg.unibench == str(tmp_path / "cfg" / "data" / "unibench.toml")  # relative to the config file
    assert cfg.unibench_datasets == ["CMUMOSI", "MER2023"]
    assert StudyConfig().unibench is None


def test_missing_file_and_presets(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        StudyConfig.from_toml(tmp_path / "nope.toml")
    assert quick().steps < full().steps and len(full().seeds) == 3


def test_shipped_example_configs_parse():
    from pathlib import Path
    for path in (Path(__file__).resolve().parents[2] / "examples").glob("*.toml"):
        cfg = StudyConfig.from_toml(path)
        assert cfg.model and cfg.out
