"""`write_report`: one self-contained HTML page per study folder (works offline: plotly.js is
inlined once, nothing is fetched).

Sections: run counts, the verdict per edited run (where the study has a card), the summary table (each verifier's headline metrics per method label, mean
± std over seeds, and wall time), failed runs with their tracebacks, figures (run times, then each
verifier's and method's own figures), the study file, and the provenance.
"""

from __future__ import annotations

import datetime as _dt
import functools
import html
import importlib
import json
import logging
from pathlib import Path
from typing import Callable

import pandas as pd
import pyarrow.dataset as ds

from mechunlearn.core.result import Result, atomic_write_text
from mechunlearn.study.registry import METHODS, VERIFIERS
from mechunlearn.verify.card import SUMMARY_METRICS, card_summary
from mechunlearn.verify.verdict import VerdictConfig, verdicts
from mechunlearn.study.store import RESULTS_DIR, RESULTS_FILE, Filters, ResultStore, and_filter

log = logging.getLogger(__name__)

REPORT_FILE = "index.html"
FIGURE_RUNS = 200
"""Runs drawn by a verifier's or a method's own figures (the first finished ones, in study order;
the figure's title says so when there are more): a 2,000-run study's report stays small and quick."""
RUNNER_METRICS = ("seconds_locate", "seconds_edit", "seconds_verify", "seconds_total")
_KEY = "\x1f"


def read_study_record(folder: str | Path) -> dict:
    """The ``study.json`` a run wrote into ``folder`` (resolved study, provenance, run ids)."""
    path = Path(folder) / "study.json"
    if not path.exists():
        raise FileNotFoundError(f"{folder} is not a study folder (no study.json); run `mechunlearn study run FILE --out {folder}` first")
    return json.loads(path.read_text())


def load_results(folder: str | Path, *, current: bool = True, filters: Filters = None, columns: list[str] | None = None, runs: list[str] | None = None) -> pd.DataFrame:
    """The results table of a study folder; ``current`` keeps only runs of the study as last run
    (rows of runs since removed from the study file stay in the folder but are left out).
    ``filters`` and ``columns`` are pushed down to the files (`mechunlearn.study.store.read_table`):
    ``load_results(folder, filters=[("method", "==", "ga")])`` reads only GA's rows; ``runs``
    (run ids) opens only those runs' files."""
    folder = Path(folder)
    store = ResultStore(folder, repair=False)
    if not store.runs():
        raise FileNotFoundError(f"no results in {folder} (neither {RESULTS_DIR}/ nor {RESULTS_FILE}); run the study first")
    if current:
        filters = and_filter(filters, [("run_id", "in", list(read_study_record(folder)["run_ids"]))])
    return store.read(filters=filters, columns=columns, runs=runs)


def report_metrics(verifiers) -> list[str]:
    """The metrics the report's tables read: each verifier's headline, the runner's seconds,
    behaviour's exact match and what the card's summary reads (`SUMMARY_METRICS`)."""
    names = {*RUNNER_METRICS, "exact_match", *SUMMARY_METRICS}
    for name in verifiers:
        if name in VERIFIERS:
            names.update(VERIFIERS.get(name).headline)
    return sorted(names)


def report_rows(folder: str | Path, *, verifiers=None) -> pd.DataFrame:
    """The rows of a study folder that the report's tables need (`report_metrics` of the study's
    verifiers, and every failed run's row), filtered in the files: a card's per-item and per-layer
    rows, most of a study's table, are not read. ``verifiers``: default the study's."""
    if verifiers is None:
        verifiers = [v["name"] for v in read_study_record(folder)["study"].get("verifiers", [])]
    wanted = ds.field("metric").isin(report_metrics(verifiers)) | (ds.field("status") == "error")
    return load_results(folder, filters=wanted)


def summary_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Headline metrics per (model, target, label), the label being a method and its parameters:
    split-level rows, mean ± std over seeds; columns ``method`` and ``runs`` (finished runs
    behind each row) first."""
    ok = frame[frame["status"] == "ok"]
    parts = []
    for name in ok["verifier"].dropna().unique():
        headline = VERIFIERS.get(name).headline if name in VERIFIERS else ()
        rows = ok[(ok["verifier"] == name) & ok["metric"].isin(headline)]
        if "layer" in rows.columns:
            rows = rows[rows["layer"].isna()]
        if rows.empty:
            continue
        extra = [c for c in ("split", "paraphrase") if c in rows.columns and rows[c].notna().any()]
        column = rows[["metric", *extra]].astype(str).agg(" · ".join, axis=1)
        parts.append(rows.assign(column=column))
    times = ok[(ok["verifier"] == "runner") & (ok["metric"] == "seconds_total")]
    parts.append(times.assign(column="seconds"))
    rows = pd.concat(parts, ignore_index=True)
    if rows.empty:
        return pd.DataFrame()
    keys = ["model", "target", "label"]
    order = list(dict.fromkeys(map(tuple, frame[keys].drop_duplicates().to_numpy())))
    stats = rows.groupby([*keys, "column"], sort=False)["value"].agg(["mean", "std", "count"])
    text = stats.apply(lambda r: f"{r['mean']:.3f}" + (f" ± {r['std']:.3f}" if r["count"] > 1 else ""), axis=1)
    table = text.unstack("column")
    table = table.reindex([k for k in order if k in table.index])[list(dict.fromkeys(rows["column"]))]
    runs = ok.groupby(keys, sort=False).agg(method=("method", "first"), runs=("run_id", "nunique"))
    return runs.reindex(table.index).join(table)


def verdict_table(frame: pd.DataFrame, config: VerdictConfig | None = None) -> pd.DataFrame:
    """The verdict of every edited run (`mechunlearn.verify.verdict`), per (model, target): the
    card's summary of each run's edited model, behaviour from the ``behavior`` verifier (forget
    exact match on trained templates where the rows say), the oracle's values from the ``retain``
    run (else the card's ``retain`` role). Empty without card rows."""
    ok = frame[(frame["status"] == "ok") & (frame["verifier"].isin(["card", "behavior"]))]
    if ok.empty or not (ok["verifier"] == "card").any():
        return pd.DataFrame()
    out = []
    for (model, target), group in ok.groupby(["model", "target"], sort=False):
        beh = group[(group["verifier"] == "behavior") & (group["metric"] == "exact_match") & (group["split"] == "forget")]
        if "paraphrase" in beh and beh["paraphrase"].eq("trained").any():
            beh = beh[beh["paraphrase"] == "trained"]
        forget_em = beh.groupby("label")["value"].mean()
        cards = group[group["verifier"] == "card"]
        # one summary of every run's card at once: roles keyed by label (a 2,000-run study has
        # hundreds of labels; one card_summary call per label took most of the report's time)
        keyed = cards.drop(columns="model").assign(model=cards["label"].astype(str) + _KEY + cards["role"].astype(str))
        summary = card_summary(Result(keyed))
        roles: dict[str, list[tuple[str, str]]] = {}
        for key in summary.index:  # label -> its (role, key) pairs, in one pass over the summary
            label, role = key.split(_KEY, 1)
            roles.setdefault(label, []).append((role, key))
        rows: dict[str, dict] = {}
        for label in dict.fromkeys(cards["label"].astype(str)):
            for role, key in roles.get(label, []):
                row = summary.loc[key].dropna().to_dict()
                if role != "edited":  # a card's own reference rows, unless a run gave them already
                    rows.setdefault(role, row)
                    continue
                if label in forget_em:
                    row["exact_match:forget"] = forget_em[label]
                rows["original" if label == "none" else label] = row  # the 'retain' run is the oracle
        table = verdicts(pd.DataFrame(rows).T, config or VerdictConfig())
        out.append(table.assign(model_name=model, target=target))
    return pd.concat(out, ignore_index=True).rename(columns={"model": "label", "model_name": "model"})[["model", "target", "label", "verdict", "evidence"]]


def write_report(folder: str | Path) -> Path:
    """Write ``folder/index.html`` from the folder's results and study record; returns its path."""
    folder = Path(folder)
    record = read_study_record(folder)
    study = record["study"]
    for module in study.get("imports", []):
        importlib.import_module(module)  # verifiers and methods registered there bring their figures
    frame = report_rows(folder, verifiers=[v["name"] for v in study.get("verifiers", [])])
    ids = record["run_ids"]
    ok = frame[frame["status"] == "ok"]
    failed = frame[frame["status"] == "error"]
    n_ok, n_failed = ok["run_id"].nunique(), failed["run_id"].nunique()
    sections = [
        f"<h1>Study <code>{_e(study['name'])}</code></h1>",
        f"<p>{_e(study.get('description', ''))}</p>" if study.get("description") else "",
        f"<p class='counts'>{len(ids)} runs: <b>{n_ok}</b> finished, <b>{n_failed}</b> failed, "
        f"<b>{len(ids) - n_ok - n_failed}</b> not run yet. Written {_dt.datetime.now().isoformat(timespec='seconds')}.</p>",
    ]
    verdict = verdict_table(frame) if n_ok else pd.DataFrame()
    if not verdict.empty:
        sections += ["<h2>Verdicts</h2>", "<p>Removed or hidden, against the retain oracle (<code>mechunlearn.verify.verdict</code>, default margins).</p>",
                     _table_html(verdict.set_index(["model", "target", "label"]))]
    sections += [
        "<h2>Summary</h2>",
        _table_html(summary_table(frame)) if n_ok else "<p>No finished runs yet.</p>",
    ]
    if n_failed:
        sections += ["<h2>Failed runs</h2>", _failures_html(failed)]
    sections += ["<h2>Figures</h2>", _figures_html(_figures(folder, frame, study))]
    sections += [
        "<h2>Study file</h2>",
        f"<pre>{_e((folder / 'study.yaml').read_text() if (folder / 'study.yaml').exists() else '')}</pre>",
        "<details><summary>Resolved study (defaults filled in)</summary>",
        f"<pre>{_e(json.dumps(study, indent=2, default=str))}</pre></details>",
        "<h2>Provenance</h2>",
        f"<pre>{_e(json.dumps(record.get('provenance', {}), indent=2, default=str))}</pre>",
    ]
    page = _PAGE.format(title=_e(f"mechunlearn study: {study['name']}"), body="\n".join(s for s in sections if s))
    path = folder / REPORT_FILE
    atomic_write_text(path, page)
    return path


def _figures(folder: Path, frame: pd.DataFrame, study: dict) -> list[tuple[str, Callable, str]]:
    """(title, thunk, note) for every figure of the report, in order. The run-time and sweep
    figures draw ``frame`` (the report's rows); each verifier's and method's own figures read
    that verifier's or method's rows of the first `FIGURE_RUNS` finished runs, when drawn."""
    from mechunlearn.figures import study as study_figures

    figures: list[tuple[str, Callable, str]] = [("Wall time per run", lambda: study_figures.run_times(frame), "")]
    for method, param, others in study_figures.swept_parameters(study):
        rows = frame[frame["method"] == method]
        for split in ("forget", "retain"):
            figures.append((f"{method}: {split} exact match against {param}", (lambda rows=rows, param=param, others=others, split=split: study_figures.sweep(rows, param, split=split, by=others)), ""))
    finished = frame[frame["status"] == "ok"]

    def lazy(column: str, name: str) -> tuple[Callable[[], pd.DataFrame], str]:
        runs = list(dict.fromkeys(finished.loc[finished[column] == name, "run_id"])) if column == "method" else list(dict.fromkeys(finished["run_id"]))
        note = f" (the first {FIGURE_RUNS} of {len(runs)} runs)" if len(runs) > FIGURE_RUNS else ""
        read = functools.cache(lambda: load_results(folder, filters=[(column, "==", name)], runs=runs[:FIGURE_RUNS]))
        return read, note

    for name in dict.fromkeys(v["name"] for v in study.get("verifiers", [])):
        if name in VERIFIERS and VERIFIERS.get(name).figures:
            read, note = lazy("verifier", name)
            figures += [(f"{name}: {fn.__name__.strip('_')}", (lambda fn=fn, read=read: fn(read())), note) for fn in VERIFIERS.get(name).figures]
    for name in finished["method"].dropna().unique():
        if name in METHODS and METHODS.get(name).figures:
            read, note = lazy("method", name)
            figures += [(f"{name}: {fn.__name__.strip('_')}", (lambda fn=fn, read=read: fn(read())), note) for fn in METHODS.get(name).figures]
    return figures


def _figures_html(figures: list[tuple[str, Callable, str]]) -> str:
    parts, inlined = [], False
    for title, make, note in figures:
        try:
            fig = make()
        except Exception as err:  # noqa: BLE001 - shown in the report, never hidden
            log.warning("report figure %r failed: %s", title, err)
            parts.append(f"<div class='figure-error'><b>{_e(title)}</b>: could not be drawn: {_e(f'{type(err).__name__}: {err}')}</div>")
            continue
        if fig is None:
            continue
        if note:
            fig.update_layout(title_text=(fig.layout.title.text or title) + note)
        parts.append(
            "<div class='figure'>"
            + fig.to_html(full_html=False, include_plotlyjs=not inlined, config={"responsive": True, "displaylogo": False})
            + "</div>"
        )
        inlined = True
    return "\n".join(parts) or "<p>No figures.</p>"


def _failures_html(failed: pd.DataFrame) -> str:
    rows = []
    for _, r in failed.drop_duplicates("run_id").iterrows():
        rows.append(
            f"<details class='failure'><summary><b>{_e(r['label'])}</b> seed {_e(r['seed'])} "
            f"<code>{_e(r['run_id'])}</code>: {_e(r['error'])}</summary><pre>{_e(r.get('traceback', ''))}</pre></details>"
        )
    return "\n".join(rows)


def _table_html(table: pd.DataFrame) -> str:
    """The summary table; index levels with a single value (one model, one target) become a caption."""
    if table.empty:
        return "<p>No headline metrics.</p>"
    caption = []
    for level in ("model", "target"):
        values = table.index.get_level_values(level).unique()
        if len(values) == 1 and table.index.nlevels > 1:
            caption.append(f"{level}: <code>{_e(values[0])}</code>")
            table = table.droplevel(level)
    table.columns.name = None
    html_table = table.to_html(classes="summary", na_rep="–", escape=True, border=0)
    return (f"<p>{'; '.join(caption)}</p>" if caption else "") + f"<div class='scroll'>{html_table}</div>"


def _e(value) -> str:
    return html.escape("" if value is None or value is pd.NA else str(value))


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px; padding: 0 1rem; color: #222; }}
h1 code {{ font-size: 0.9em; }} h2 {{ border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2rem; }}
table.summary {{ border-collapse: collapse; font-size: 0.85rem; }}
table.summary th, table.summary td {{ padding: .25rem .5rem; border-bottom: 1px solid #eee; text-align: right; white-space: nowrap; }}
table.summary th {{ background: #f6f6f6; }}
pre {{ background: #f6f6f6; padding: .75rem; overflow-x: auto; font-size: 0.8rem; }}
.scroll {{ overflow-x: auto; }} .figure {{ margin: 1rem 0; }} .figure-error {{ background: #fdecea; padding: .5rem; margin: 1rem 0; }}
.failure summary {{ cursor: pointer; margin: .3rem 0; }}
</style></head>
<body>
{body}
</body></html>
"""
