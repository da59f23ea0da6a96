"""A synthetic MER-UniBench layout (label npz + subtitle CSVs), scored on the packaged emotion wheels."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

EMO = {"s1": ("happy", "I won the lottery!"), "s2": ("angry", "Get out of my house!"),
       "s3": ("sad", "My dog died."), "s4": ("worried", "What if it fails?"),
       "s5": ("neutral", "The bus is here."), "s6": ("surprise", "Wait, what?")}
VAL = {"v1": (1.2, "这太好了", "This is great"), "v2": (-0.8, "很糟糕", "Awful"), "v3": (0.0, "还行", "It is ok"),
       "v4": (2.0, "非常喜欢", "Love it"), "v5": (-1.6, "讨厌", "Hate it"), "v6": (0.4, "不错", "Not bad")}


def write_unibench(root: Path, wheels: Path | None = None) -> Path:
    """Write labels/, subs/ and unibench.toml under ``root`` (MER2023: 6 samples, s6 without subtitle;
    SIMS: 6 samples; ``wheels`` only when given, else the packaged tables are used); return the TOML path."""
    labels = root / "labels"
    (labels / "mer2023-dataset-process").mkdir(parents=True)
    (labels / "sims-process").mkdir()
    np.savez(labels / "mer2023-dataset-process" / "label-6way.npz",
             test1_corpus={k: {"emo": e, "val": 0.0} for k, (e, _) in EMO.items()})
    np.savez(labels / "sims-process" / "label.npz",
             test_corpus={k: {"emo": 0, "val": v} for k, (v, _, _) in VAL.items()})
    (root / "subs").mkdir()
    pd.DataFrame({"name": list(EMO)[:-1], "english": [t for _, t in list(EMO.values())[:-1]]}).to_csv(
        root / "subs" / "mer.csv", index=False)  # s6 has no subtitle
    pd.DataFrame({"name": list(VAL), "chinese": [c for _, c, _ in VAL.values()],
                  "english": [e for _, _, e in VAL.values()]}).to_csv(root / "subs" / "sims.csv", index=False)
    cfg = root / "unibench.toml"
    line = f'wheels = "{wheels}"\n' if wheels is not None else ""
    cfg.write_text(f'labels = "labels"\n{line}[subtitles]\nMER2023 = "subs/mer.csv"\nsims = "subs/sims.csv"\n')
    return cfg
