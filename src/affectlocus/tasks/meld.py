"""Reader for a user's MELD folder (``train_sent_emo.csv``, ``dev_sent_emo.csv``, ``test_sent_emo.csv``).

Sample ids follow MERBench/AffectGPT: ``{train|val|test}_dia{Dialogue_ID}_utt{Utterance_ID}``
(``val`` is the dev file). Files are decoded line by line: UTF-8 (BOM tolerated), falling back to
cp1252 for lines holding raw Windows bytes (MELD releases before 2020-11 stored ``’`` as ``\\x92``);
UTF-8-read-as-cp1252 mojibake (``â€™``) is repaired and whitespace collapsed.
"""
from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

from ..errors import DataError
from .embedded import fix_text, require_columns

#: split name used in ids → file name
MELD_FILES = {"train": "train_sent_emo.csv", "val": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}
MELD_EMOTIONS = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")
MELD_SENTIMENTS = ("negative", "neutral", "positive")
_COLUMNS = ("Utterance", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID")

#: one parsed utterance: (id, text, emotion, sentiment, speaker)
MeldRow = tuple[str, str, str, str, str]


def _decode_lines(raw: bytes) -> list[str]:
    """Decode each line as UTF-8, or as cp1252 where it is not valid UTF-8."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    out = []
    for line in raw.splitlines(keepends=True):
        try:
            out.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            out.append(line.decode("cp1252", "replace"))
    return out


def meld_folder(meld_dir: str | Path | None) -> Path:
    """Validate a MELD folder: it must exist and hold the three official CSV files."""
    if meld_dir is None:
        raise DataError("the MELD tasks read a MELD folder you provide: pass meld_dir=PATH (a folder "
                        f"holding {', '.join(MELD_FILES.values())})")
    folder = Path(meld_dir).expanduser()
    if not folder.is_dir():
        raise DataError(f"MELD folder {folder} does not exist "
                        f"(expected {', '.join(MELD_FILES.values())} in it)")
    missing = [f for f in MELD_FILES.values() if not (folder / f).is_file()]
    if missing:
        have = sorted(p.name for p in folder.iterdir())
        raise DataError(f"MELD folder {folder} lacks {', '.join(missing)}; "
                        f"it holds: {', '.join(have) or 'nothing'}")
    return folder


@lru_cache(maxsize=8)
def read_meld(folder: str, split: str) -> tuple[MeldRow, ...]:
    """Parse one MELD split (``train``, ``val`` or ``test``) of the validated ``folder``."""
    path = Path(folder) / MELD_FILES[split]
    records = list(csv.DictReader(_decode_lines(path.read_bytes())))
    require_columns(records, _COLUMNS, path)
    rows: list[MeldRow] = []
    seen: set[str] = set()
    for n, rec in enumerate(records, start=2):
        rec = {(k or "").strip(): (v or "").strip() for k, v in rec.items()}
        emotion, sentiment = rec["Emotion"].lower(), rec["Sentiment"].lower()
        if emotion not in MELD_EMOTIONS or sentiment not in MELD_SENTIMENTS:
            raise DataError(f"{path} line {n}: unknown label emotion={emotion!r} sentiment={sentiment!r}")
        try:
            sid = f"{split}_dia{int(rec['Dialogue_ID'])}_utt{int(rec['Utterance_ID'])}"
        except ValueError:
            raise DataError(f"{path} line {n}: Dialogue_ID/Utterance_ID are not integers") from None
        if sid in seen:
            raise DataError(f"{path} line {n}: duplicate sample {sid}")
        seen.add(sid)
        rows.append((sid, fix_text(rec["Utterance"]), emotion, sentiment, rec.get("Speaker", "")))
    return tuple(rows)
