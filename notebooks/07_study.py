# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Studies: many runs, one table, one report
#
# A study file crosses models × targets × methods (with parameter sweeps) × seeds. Every run
# locates, edits, verifies and reverts; its rows land in one Parquet table keyed by the hash of
# the run's config, so running the study again skips what is finished. This notebook runs
# `studies/smoke.yaml`, plots its results and writes the HTML report.
#
# Set `MECHUNLEARN_NOTEBOOK_QUICK=1` to use the small world (what CI does, about two minutes once
# the small bios-tiny is built); otherwise the same study runs on the full bios-tiny.

# %%
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import mechunlearn
from mechunlearn.figures import study as study_figures
from mechunlearn.study import load_results, load_study, run_study, summary_table, write_report

QUICK = os.environ.get("MECHUNLEARN_NOTEBOOK_QUICK") == "1"
studies = Path(mechunlearn.__file__).resolve().parent.parent / "studies"
study = load_study(studies / "smoke.yaml")
if not QUICK:
    study = replace(study, models=tuple(replace(m, recipe="default") for m in study.models))
print(study.source)

# %% [markdown]
# ## The runs
# The `npo` entry sweeps the learning rate, so the study has one run per method and value.

# %%
import pandas as pd

pd.DataFrame([{"label": r.label, "method": r.method, "lr": r.params.get("lr"), "steps": r.params.get("steps"), "seed": r.seed, "run_id": r.run_id} for r in study.runs()])

# %% [markdown]
# ## Run the study
# `run_study` loads the model once, runs each method and writes every finished run before the
# next one starts (Ctrl-C loses nothing finished). `executor="ray", workers=2` would spread the
# runs over Ray workers instead.

# %%
out = Path(tempfile.mkdtemp(prefix="mechunlearn-study-"))
summary = run_study(study, out, threads=1)
summary

# %%
results = load_results(out)
assert summary.failed == 0, results.loc[results["status"] == "error", ["label", "error"]]
results.head()

# %% [markdown]
# ## Summary: headline metrics per method (mean over seeds) and wall time

# %%
summary_table(results)

# %% [markdown]
# The unedited model knows the forget people; the retain model never saw them; the unlearning
# runs should land in between on the forget split while keeping the retain split.

# %%
em = results[(results["metric"] == "exact_match") & (results["paraphrase"] == "trained")].pivot_table(index="label", columns="split", values="value")
assert em.loc["none", "forget"] > 0.9, em
assert em.loc["retain", "forget"] < 0.5, em
assert em.loc["ga", "forget"] < em.loc["none", "forget"], em
em

# %% [markdown]
# ## Figures
# Forget vs retain exact match (each method's Pareto front dotted, the study-wide front dashed),
# on the trained templates and on held-out paraphrases:

# %%
study_figures.tradeoff(results, paraphrase="trained")

# %%
study_figures.tradeoff(results, paraphrase="heldout")

# %%
study_figures.split_bars(results)

# %%
study_figures.sweep(results, "lr", split="forget")

# %%
study_figures.run_times(results)

# %% [markdown]
# ## The report and a second run
# One self-contained HTML page (plotly.js inlined, works offline). Running the study again finds
# every run finished and does nothing.

# %%
report = write_report(out)
again = run_study(study, out)
assert again.skipped == again.total and again.ok == 0
print(report, f"{report.stat().st_size / 1e6:.1f} MB")
