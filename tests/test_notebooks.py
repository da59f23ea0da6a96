"""The notebooks run top to bottom (at a reduced size) so they cannot rot."""
from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("0*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    import nbformat
    import nbclient
    monkeypatch.setenv("AFFECTLOCUS_NB_SCALE", "0.25")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors


def test_there_are_five_notebooks():
    assert [p.name for p in NOTEBOOKS] == ["01_locate.ipynb", "02_intervene.ipynb", "03_get.ipynb",
                                           "04_neurons.ipynb", "05_three_witnesses.ipynb"]
