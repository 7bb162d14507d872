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
# # Planted knowledge: do the localizers find where a fact lives?
#
# Nobody knows where a real model keeps a fact, so nobody can say whether a localizer picks the
# *right* components. Here we know. A **planted** model starts from bios-tiny's retain model (it
# never saw the forget people) and learns the forget people's bios and questions by training
# **only** a component set S that we chose: one MLP layer, k neurons of one layer, a random 1% of
# the block weights, or a few attention heads. Outside S it is bit for bit the retain model, so
#
# * S is the ground truth every localizer is scored against (AUROC, precision and recall at |S|,
#   at the localizer's own granularity: entries, neurons, heads, tensors, modules or layers);
# * restoring S is exact unlearning, and the retain model is the oracle every verifier compares with.
#
# Then: what does correct localisation buy? We unlearn with GA, GradDiff and NPO restricted to S,
# to each localizer's top-|S| entries, to |S| random entries, or to nothing at all, and read the
# evaluation card against the oracle.
#
# `MECHUNLEARN_NOTEBOOK_QUICK=1` (what CI runs) uses the small world (40 people), the layer plant,
# GradDiff and a handful of selections; without it the full bios-tiny (200 people) and every plant
# type, built and cached on first use.

# %%
import os
import time

import pandas as pd

from mechunlearn import figures
from mechunlearn.locate.suite import SUITE, run_suite
from mechunlearn.models import load_model
from mechunlearn.models.bios_tiny import BiosTinyRecipe, GateError
from mechunlearn.models.planted import default_recipe, load_planted
from mechunlearn.verify.attacks import AttackConfig
from mechunlearn.verify.card import CardConfig
from mechunlearn.verify.localization import GroundTruth, oracle_scores, random_scores, restricted_unlearning, score_table, top_entries
from mechunlearn.verify.probes import ProbeConfig
from mechunlearn.world import World

QUICK = os.environ.get("MECHUNLEARN_NOTEBOOK_QUICK") == "1"
recipe = BiosTinyRecipe().small() if QUICK else BiosTinyRecipe()
world = World(recipe.world)
trained = world.target(0.1, paraphrase="trained")  # what the localizers and the unlearning see
everything = world.target(0.1, paraphrase="all")   # what the card scores
oracle = load_model("bios-tiny", recipe=recipe, retain_for=0.1)
# Every plant type with its gated recipe on this world (`default_recipe`: `FULL_WORLD_RECIPES` on
# the full world); quick mode: the layer plant (150 steps on the small world).
PLANTS = {kind: default_recipe(kind, recipe) for kind in (("layer",) if QUICK else ("layer", "neurons", "low_rank", "sparse", "heads"))}
print(f"{len(PLANTS)} plant type(s): {', '.join(PLANTS)}; {len(trained.meta['forget_people'])} forget people")

# %% [markdown]
# ## The planted models and their gates
# A planted model is saved only if it learned the forget people (exact match ≥ 0.95 on the
# trained question templates) and kept the retain people (within 0.02 of the retain model). The
# held-out templates say whether the plant generalises beyond the wordings it was taught.

# %%
planted, gates = {}, []
for kind, plant in PLANTS.items():
    start = time.perf_counter()
    try:
        model, S = load_planted(kind, recipe=plant, world_recipe=recipe)
    except GateError as miss:  # full mode: a recipe that misses its gates is shown, not used (recorded: no retraining)
        if QUICK:
            raise
        gates.append(miss.gates.assign(plant=kind, S_entries=None))
        print(f"{kind}: missed its gates, left out\n{miss.gates.to_string(index=False)}")
        continue
    planted[kind] = (model, S, GroundTruth.of(model, S))
    g = model.meta["planted_gates"].assign(plant=kind, S_entries=len(planted[kind][2]))  # measured when it was built
    gates.append(g)
    print(f"{kind}: |S| = {len(planted[kind][2]):,} entries, loaded (or built) in {time.perf_counter() - start:.0f} s")
gates = pd.concat(gates, ignore_index=True)
gates.pivot_table(index="plant", columns="gate", values="exact_match").round(3)

# %%
for kind, (model, S, truth) in planted.items():
    em = gates[gates["plant"] == kind].set_index("gate")["exact_match"]
    assert em["forget_trained"] >= PLANTS[kind].gate_forget, f"{kind} plant missed its forget gate"

# %% [markdown]
# ## Scoring every localizer against S
# Each localizer runs on the planted model with its defaults (`mechunlearn.locate.suite`) and is
# scored at its own granularity and every coarser one. The random localizer (mean of 20 draws)
# and S itself (the oracle) are the two ends of the scale.

# %%
# quick mode leaves out the four slowest (LUNAR's sweep, fact lookup's probes, WAGLE's retain
# gradient, the SAE that sae_latents trains)
names = [n for n in SUITE if n not in ("lunar", "fact_lookup", "wagle", "sae_latents")] if QUICK else list(SUITE)
tables = []
for kind, (model, S, truth) in planted.items():
    start = time.perf_counter()
    outputs = run_suite(model, trained, names, progress=False)
    tables.append(score_table(outputs, truth).assign(plant=kind))
    planted[kind] = (model, S, truth, outputs)
    print(f"{kind}: {len(outputs)} localizers in {time.perf_counter() - start:.0f} s")
scores = pd.concat(tables, ignore_index=True)
scores[scores["own"]].pivot_table(index=["localizer", "granularity"], columns="plant", values="auroc").round(3)

# %%
figures.localization.auroc_heatmap(scores)

# %%
# The benchmark is honest: S itself reads 1 and the random localizer about 0.5 wherever AUROC is defined.
refs = scores[scores["localizer"].isin(["oracle", "random"])].dropna(subset=["auroc"])
assert (refs[refs["localizer"] == "oracle"]["auroc"] == 1.0).all()
assert (refs[(refs["localizer"] == "random") & (refs["granularity"].isin(["entries", "neurons"]))]["auroc"].sub(0.5).abs() < 0.05).all()

# %% [markdown]
# ## What correct localisation buys
# Each loss runs with the same budget and early stop (forget exact match ≤ 0.08 on a seeded 300
# forget questions) under each restriction; the card reads behaviour, probes (refit, the
# question's last token) and relearning on the unseen half against the oracle, and gives the
# verdict. ``in_s`` is the share of the selection that lies in S.

# %%
# GradDiff runs under every localizer's pick (are localized picks better than random?, arXiv
# 2505.16252); GA and NPO under S, the best-scoring localizer's pick, random and none (is plain GA
# robust when the localisation is correct?, LACUNA). Quick mode: GradDiff and two picks.
LOSSES = {"graddiff": ("salun", "causal_tracing")} if QUICK else {"graddiff": tuple(SUITE), "ga": "best", "npo": "best"}
card = CardConfig(sections=("behavior", "probes", "attacks"), attack_names=("relearn",),
                  probes=ProbeConfig(templates_per_fact=2, positions=("question",)),
                  attacks=AttackConfig(max_items=300, relearn_steps=10), max_items=300)
restricted = []
for kind, (model, S, truth, outputs) in planted.items():
    own = scores[(scores["plant"] == kind) & scores["own"] & ~scores["localizer"].isin(["random", "oracle"])].dropna(subset=["auroc"])
    best = (own.sort_values("auroc", ascending=False)["localizer"].iloc[0],)
    for loss, picks in LOSSES.items():
        masks = {"S (oracle)": top_entries(oracle_scores(truth, "entries"), truth, "entries")}
        masks |= {name: top_entries(outputs[name][1], truth, outputs[name][0]) for name in (best if picks == "best" else picks)}
        masks |= {"random": top_entries(random_scores(truth, "entries"), truth, "entries"), "none": None}
        start = time.perf_counter()
        table, _, _ = restricted_unlearning(model, trained, truth, masks, losses=(loss,), oracle=oracle, verify_target=everything, card=card, progress=False)
        restricted.append(table.assign(plant=kind))
        print(f"{kind} / {loss}: {len(table)} restricted runs and their card in {time.perf_counter() - start:.0f} s")
restricted = pd.concat(restricted, ignore_index=True)
cols = ["plant", "loss", "selection", "in_s", "steps", "exact_match:forget", "exact_match:retain", "probe_forget_best", "relearn_other_half_em", "verdict"]
restricted[[c for c in cols if c in restricted.columns]].round(3)

# %%
figures.localization.restricted_bars(restricted)

# %%
# Restricting to S changes nothing outside S (in_s = 1). Quick mode's runs all forget; in full mode a
# restriction under which a loss could not forget within its budget is listed (its verdict says so).
assert (restricted[restricted["selection"] == "S (oracle)"]["in_s"] == 1.0).all()
unforgotten = restricted[restricted["exact_match:forget"] > 0.2]
assert not (QUICK and len(unforgotten)), unforgotten
unforgotten[["plant", "loss", "selection", "exact_match:forget", "verdict"]]

# %% [markdown]
# ## What the numbers say
# Read from the tables above (the sentences are built from the measured numbers; the README's
# table "Planted knowledge" has the full-model run).

# %%
own = scores[scores["own"] & ~scores["localizer"].isin(["random", "oracle"])].dropna(subset=["auroc"])
for kind, sub in own.groupby("plant"):
    best = sub.sort_values("auroc", ascending=False).iloc[0]
    worst = sub.sort_values("auroc").iloc[0]
    print(f"{kind}: best {best['localizer']} (AUROC {best['auroc']:.2f} at {best['granularity']}), "
          f"worst {worst['localizer']} ({worst['auroc']:.2f} at {worst['granularity']}); "
          f"{int((sub['auroc'] > 0.55).sum())} of {len(sub)} beat random by 0.05")
for (kind, loss), sub in restricted.groupby(["plant", "loss"]):
    s = sub.set_index("selection")
    picks = s.drop(index=["S (oracle)", "random", "none"])
    print(f"{kind} / {loss}: retain {s.loc['S (oracle)', 'exact_match:retain']:.2f} under S, {s.loc['random', 'exact_match:retain']:.2f} random, "
          f"{s.loc['none', 'exact_match:retain']:.2f} unrestricted, {picks['exact_match:retain'].min():.2f}–{picks['exact_match:retain'].max():.2f} "
          f"under the localizers' picks; relearned {s.loc['S (oracle)', 'relearn_other_half_em']:.2f} under S vs {s.loc['none', 'relearn_other_half_em']:.2f} unrestricted; "
          f"verdicts: {', '.join(f'{k}={v}' for k, v in s['verdict'].items())}")

# %%
# Full mode keeps the three tables (gates, localizer scores, restricted unlearning) as CSV, for the
# README's table or a report: in $MECHUNLEARN_PLANTED_OUT (default reports/planted).
if not QUICK:
    from pathlib import Path

    out = Path(os.environ.get("MECHUNLEARN_PLANTED_OUT", "reports/planted"))
    out.mkdir(parents=True, exist_ok=True)
    for name, table in {"gates": gates, "scores": scores, "restricted": restricted}.items():
        table.to_csv(out / f"{name}.csv", index=False)
    print(f"tables written to {out.resolve()}")
