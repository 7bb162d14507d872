"""Targets from files: `load_target` reads QA tables, TOFU's layout, multiple-choice files and
text corpora into a `Target` (`Target.from_records` checks every record).

| layout          | files                                                             | record                                   |
| --------------- | ----------------------------------------------------------------- | ---------------------------------------- |
| QA table        | one ``.jsonl`` / ``.json`` / ``.csv`` / ``.parquet`` with ``split`` | ``prompt`` (or ``question``), ``answer``, optional ``subject``, ``attribute``, ``paraphrase``, ``paraphrased_answer``, ``perturbed_answers``, ``context`` |
| TOFU            | a forget file, a retain file (and a holdout file), no ``split``     | ``question``, ``answer``, ``paraphrased_answer``, ``perturbed_answer`` (a list) |
| multiple choice | like a QA table, or one file per split                            | ``question``, ``choices`` (a list), ``answer`` (the right choice's index) |
| corpus          | like a QA table, or one file per split (``.txt``: blank-line-separated texts) | ``text``                       |

``load_target(folder)`` reads a folder holding ``forget*``, ``retain*`` (and ``holdout*``) files,
the layout `mechunlearn.data.export.export_tofu` writes. QA records read one file per split
(TOFU's layout) are scored under TOFU's protocol (`mechunlearn.verify.protocol`) unless
``protocol=`` says otherwise. In CSV files, list cells are JSON lists (``["a", "b"]``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mechunlearn.data.target import RecordError, Target, records_to_target

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".txt")
"""File types `load_target` reads."""
LIST_COLUMNS = ("choices", "perturbed_answers", "perturbed_answer", "paraphrased_answer")
"""Columns whose CSV cells may hold a JSON list."""

Row = tuple[str, dict, "str | None"]


def _clean(value: Any) -> Any:
    """Plain Python values from pandas / pyarrow cells (arrays to lists, NaN and "" to None)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _json_rows(path: Path) -> list[tuple[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise RecordError(f"{path}:{err.lineno}: not valid JSON ({err.msg}); fix the file or write one JSON object per line") from None
        return [(f"{path} record {i + 1}", r) for i, r in enumerate(records)]
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((f"{path}:{n}", json.loads(line)))
        except json.JSONDecodeError as err:
            raise RecordError(f"{path}:{n}: not valid JSON ({err.msg}); write one JSON object per line") from None
    return rows


def _csv_cell(where: str, key: str, value: Any) -> Any:
    value = _clean(value)
    if isinstance(value, str) and key in LIST_COLUMNS and value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except json.JSONDecodeError as err:
            raise RecordError(f"{where}: column {key!r} is not a JSON list ({err.msg}); write it as [\"a\", \"b\"]") from None
    return value


def read_records(path: str | Path) -> list[tuple[str, Any]]:
    """``(where, record)`` pairs of one file, ``where`` its file and line (or row)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no data file {path}; give a {', '.join(SUFFIXES)} file (or a folder of forget/retain files)")
    if path.suffix in (".jsonl", ".json"):
        return _json_rows(path)
    if path.suffix == ".txt":
        rows, start, lines = [], 1, []
        for n, line in enumerate([*path.read_text(encoding="utf-8").splitlines(), ""], start=1):
            if line.strip():
                start = n if not lines else start
                lines.append(line.strip())
            elif lines:
                rows.append((f"{path}:{start}", {"text": " ".join(lines)}))
                lines = []
        return rows
    if path.suffix == ".csv":
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        out = []
        for i, record in enumerate(frame.to_dict("records")):
            where = f"{path}:{i + 2}"  # line 1 is the header
            record = {k: _csv_cell(where, k, v) for k, v in record.items()}
            if "choices" in record and isinstance(record.get("answer"), str) and record["answer"].strip().lstrip("-").isdigit():
                record["answer"] = int(record["answer"])
            out.append((where, record))
        return out
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
        return [(f"{path} row {i + 1}", {k: _clean(v) for k, v in r.items()}) for i, r in enumerate(frame.to_dict("records"))]
    raise RecordError(f"{path}: cannot read {path.suffix!r} files; use one of {', '.join(SUFFIXES)}")


def _split_files(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for split in ("forget", "retain", "holdout"):
        matches = sorted(p for p in folder.iterdir() if p.is_file() and p.name.startswith(split) and p.suffix in SUFFIXES)
        if len(matches) > 1:
            raise RecordError(f"{folder}: several {split} files {[p.name for p in matches]}; keep one (or pass the files to load_target)")
        if matches:
            found[split] = matches[0]
    for need in ("forget", "retain"):
        if need not in found:
            raise RecordError(f"{folder}: no {need} file; a data folder holds forget*.jsonl (or .json, .csv, .parquet, .txt), retain* and optionally holdout* files")
    return found


def load_target(path: str | Path, *, retain: str | Path | None = None, holdout: str | Path | None = None, name: str | None = None, protocol: str | None = None) -> Target:
    """A `Target` from a data file (records with a ``split`` column), a forget file with
    ``retain=`` (and ``holdout=``) files, or a folder of ``forget*`` / ``retain*`` / ``holdout*``
    files (the module doc lists the layouts).

    >>> load_target("tests/data/qa.jsonl")
    >>> load_target("forget10_perturbed.json", retain="retain_perturbed.json")   # TOFU's files
    >>> load_target("tests/data/tofu")                                           # a folder
    """
    path = Path(path)
    if path.is_dir():
        if retain is not None or holdout is not None:
            raise ValueError(f"{path} is a folder of split files: do not pass retain= or holdout= as well")
        files: dict[str, Path | None] = dict(_split_files(path))
    elif retain is not None:
        files = {"forget": path, "retain": Path(retain), "holdout": Path(holdout) if holdout is not None else None}
    else:
        if holdout is not None:
            raise ValueError("holdout= needs retain= too (one file per split), or put a split column in one file")
        files = {None: path}
    rows: list[Row] = [(where, record, split) for split, file in files.items() if file is not None for where, record in read_records(file)]
    per_split = None not in files
    for split, file in files.items():
        if per_split and file is not None and not any(s == split for _, _, s in rows):
            raise RecordError(f"{file}: no records in the {split} file; fill it or leave it out")
    meta = {"files": {str(k): str(v) for k, v in files.items() if v is not None}}
    if per_split and any("split" in r for _, r, _ in rows if isinstance(r, dict)):
        meta["layout"] = "split files"
    elif per_split:
        meta["layout"] = "tofu"
    target = records_to_target(rows, name=name or (path.stem if path.is_file() else path.name), protocol=protocol, source=str(path), meta=meta)
    if protocol is None and target.meta.get("layout") == "tofu" and target.kind == "qa":
        target.meta["protocol"] = "tofu"
    return target
