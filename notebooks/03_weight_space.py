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
# # Weight space: where unlearning methods move the weights
#
# On `bios-tiny` with the 10% forget split (the forget people's questions on the *trained*
# templates are the forget set), we run every unlearning method of the one loop — unmasked, under
# a weight mask (SalUn, WAGLE), as a one-tensor step (SLUG) and as a one-vector edit (Needle) — and
# compare forget, retain and held-out-template accuracy (greedy exact match) and where the weights
# moved (‖Δθ‖ per layer and module). Then the ConceptVectors check: do GA and NPO change a concept's
# value vector, or only route around it?
#
# Set `MECHUNLEARN_NOTEBOOK_QUICK=1` for the small world, 15 loop steps and a 3-tensor SLUG search
# (what CI runs, a few minutes); without it, the full model (its shipped reference weights).

# %%
import logging
import os
import time

import pandas as pd
import torch

from mechunlearn.figures.weight_space import delta_by_layer, mask_density, slug_pareto, tradeoff, weight_deltas
from mechunlearn.locate.saliency import MagnitudeScore, RandomScore, SalUnSaliency, SnipScore, WagleAttribution, score_all, seeded_subset
from mechunlearn.locate.slug import SlugConfig, slug
from mechunlearn.models import load_model
from mechunlearn.models.bios_tiny import BiosTinyRecipe
from mechunlearn.unlearn import UnlearnConfig, unlearn
from mechunlearn.verify import exact_match_by_set, score_items
from mechunlearn.world import World

logging.getLogger("mechunlearn").setLevel(logging.WARNING)
torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads()))))
QUICK = os.environ.get("MECHUNLEARN_NOTEBOOK_QUICK") == "1"
recipe = BiosTinyRecipe().small() if QUICK else BiosTinyRecipe()
model = load_model("bios-tiny", recipe=recipe)
world = World(recipe.world)
split = world.target(forget_frac=0.1, paraphrase="all")
target = split.where(paraphrase="trained")  # what the methods train on and are stopped by
heldout = split.where(paraphrase="heldout")  # the same people's facts, asked in never-trained wordings
EVAL = {
    "forget": list(target.forget),
    "retain": seeded_subset(target.retain, 600, seed=1),
    "forget_heldout": list(heldout.forget),
    "retain_heldout": seeded_subset(heldout.retain, 600, seed=2),
}
{k: len(v) for k, v in EVAL.items()}, model


# %%
def evaluate(edit=None) -> dict[str, float]:
    return exact_match_by_set(model, EVAL, edit)


start_hash = model.weights_hash()
unedited = evaluate()
pd.Series(unedited, name="unedited").to_frame().T

# %% [markdown]
# ## Methods and their settings
#
# The papers' defaults are for 7B models. Re-tuned here for a 4-layer, 3.4M-parameter model on
# this split (what changed is stated next to each setting):
#
# * all loop methods stop early once forget exact match ≤ 0.05 (checked every 5 steps), at most
#   `STEPS` steps of 32 forget + 32 retain items, AdamW at `LR` = 3e-4 (1e-4 is too slow here;
#   at 1e-3 GradDiff overshoots: SalUn+GradDiff with λ = 5 kept only 0.82 of retain, against 0.91
#   at 3e-4);
# * GradDiff, NPO and SimNPO weight the retain NLL by λ = `RETAIN_WEIGHT` = 5. With λ = 1 the
#   forget term wins before the early stop: on this build SalUn+GradDiff reached forget 0.04 at
#   retain 0.68 of the unedited model, SalUn+NPO 0.05 at 0.81 (λ is a tuned hyper-parameter in
#   WAGLE's NPO/GradDiff runs too);
# * NPO keeps β = 0.1; SimNPO keeps β = 2.5, γ = 0;
# * RMU steers layer 2 of 4 (the paper's layer 7 of 32 is too early a fraction here), trains
#   `W_out` of layers 0–2 at lr 1e-3, c = 4 × the mean residual norm (the paper's c = 20 is an
#   absolute norm for 7B), α = 100;
# * SalUn masks the top 10% of weights by |g_f| (paper: 50%; at 50% it behaves like unmasked
#   GradDiff on so small a model); WAGLE the top 10% by |(θ − g_r/γ)·g_f| with γ = 1e-3 (public
#   code default), ranked globally over the block weights (norms and embeddings excluded);
# * SLUG searches every Pareto tensor (attention and MLP matrices) for the smallest step that brings
#   forget exact match to ≤ 0.10.

# %%
STEPS = 15 if QUICK else 200
LR = 3e-4
RETAIN_WEIGHT = 5.0
KEEP = 0.1
COMMON = dict(steps=STEPS, lr=LR, batch_size=32, stop_forget_em=0.05, stop_every=5)
LOOP = {
    "GA": UnlearnConfig(loss="ga", **COMMON),
    "GradDiff": UnlearnConfig(loss="graddiff", loss_options={"retain_weight": RETAIN_WEIGHT}, **COMMON),
    "NPO": UnlearnConfig(loss="npo", loss_options={"beta": 0.1, "retain_weight": RETAIN_WEIGHT}, **COMMON),
    "SimNPO": UnlearnConfig(loss="simnpo", loss_options={"beta": 2.5, "gamma": 0.0, "retain_weight": RETAIN_WEIGHT}, **COMMON),
    "RMU": UnlearnConfig(loss="rmu", loss_options={"layer": 2, "c_scale": 4.0, "alpha": 100.0}, **{**COMMON, "lr": 1e-3}),
}
MASKED = {  # name: (scorer, loss config)
    "SalUn+GradDiff": ("salun", LOOP["GradDiff"]),
    "WAGLE+GradDiff": ("wagle", LOOP["GradDiff"]),
    "WAGLE+NPO": ("wagle", LOOP["NPO"]),
}
SCORERS = {
    "salun": SalUnSaliency(keep_ratio=KEEP),
    "wagle": WagleAttribution(keep_ratio=KEEP, gamma=1e-3, retain_items=1024),
    "snip": SnipScore(keep_ratio=KEEP),
    "magnitude": MagnitudeScore(keep_ratio=KEEP),
    "random": RandomScore(keep_ratio=KEEP),
}
SLUG = (
    SlugConfig(forget_threshold=0.10, retain_items=256, forget_eval_items=160, retain_eval_items=200, max_candidates=3)
    if QUICK
    else SlugConfig(forget_threshold=0.10, retain_items=512, forget_eval_items=480, retain_eval_items=600)
)

# %% [markdown]
# ## Masks: SalUn, WAGLE and the ablations at the same ratio
# One gradient pass serves every scorer. The table shows how much the masks agree (Jaccard of the
# selected weights) and the figure where each mask sits.

# %%
t0 = time.perf_counter()
scores = score_all(model, target, SCORERS, progress=False)
masks = {k: SCORERS[k].select(s) for k, s in scores.items()}


def jaccard(a, b) -> float:
    inter = sum(int((a.masks[n] & b.masks[n]).sum()) for n in a.names)
    return inter / (len(a) + len(b) - inter)


overlap = pd.DataFrame({a: {b: jaccard(masks[a], masks[b]) for b in masks} for a in masks})
print(f"scores of {len(masks)} scorers in {time.perf_counter() - t0:.1f} s")
overlap.round(3)

# %%
mask_frame = pd.concat([m.to_frame().assign(method=k) for k, m in masks.items()], ignore_index=True)
mask_density(mask_frame)

# %% [markdown]
# ## Unlearning: every method from the same unedited weights

# %%
edits, runs, seconds = {}, [], {}
for name, cfg in LOOP.items():
    t0 = time.perf_counter()
    edits[name] = unlearn(model, target, cfg)
    seconds[name] = time.perf_counter() - t0
for name, (scorer, cfg) in MASKED.items():
    t0 = time.perf_counter()
    edits[name] = unlearn(model, target, cfg, mask=masks[scorer])
    seconds[name] = time.perf_counter() - t0
assert model.weights_hash() == start_hash, "unlearn() must leave the model unedited"
{k: (e.meta["steps"], round(seconds[k], 1)) for k, e in edits.items()}

# %% [markdown]
# ## SLUG: one tensor, one gradient, one step
# Importance ‖g_f‖/‖θ‖ against alignment |cos(g_f, g_r)| for every attention and MLP matrix; for
# each tensor on the Pareto front, the smallest step that reaches the forget criterion and what it
# costs on retain.

# %%
t0 = time.perf_counter()
slug_result = slug(model, target, SLUG, progress=False)
seconds["SLUG"] = time.perf_counter() - t0
slug_result.table[["name", "importance", "alignment", "rel_step", "passed", "forget_em", "retain_em", "trials", "chosen"]].round(4)

# %%
slug_pareto(slug_result.stats, chosen=slug_result.chosen)

# %%
if slug_result.edit is not None:
    edits["SLUG"] = slug_result.edit

# %% [markdown]
# ## Needle: one value vector per forget person
# Needle (ConceptVectors' direct edit) works on a concept's value vector. Here each forget person is
# a "concept" whose reference tokens are their six attribute values; the best-scoring vector is
# noised and then trained by gradient ascent on that person's bios, with only that vector trainable.

# %%
from mechunlearn.locate.concept_vectors import NeedleConfig, needle, needle_subjects, reference_ids, scan

t0 = time.perf_counter()
edits["Needle"], needle_sites = needle_subjects(model, target, NeedleConfig(sigma=1.0, steps=20, lr=5e-2), progress=False)
seconds["Needle"] = time.perf_counter() - t0
print(needle_sites)

# %% [markdown]
# ## Results
# Forget, retain and held-out-template exact match for every method; "localized" marks the methods
# that change only a selected part of the weights.

# %%
LOCALIZED = {"SalUn+GradDiff", "WAGLE+GradDiff", "WAGLE+NPO", "SLUG", "Needle", "RMU"}
rows = [{"method": "unedited", **unedited, "changed_weights": 0, "seconds": 0.0}]
deltas = []
for name, edit in edits.items():
    delta = weight_deltas(model, edit, method=name)
    deltas.append(delta)
    moved = delta[(delta["weight"] != "all") & (delta["metric"] == "delta_density")]
    changed = int(sum(v * model.weight(n).numel() for n, v in zip(moved["weight_name"], moved["value"])))
    rows.append({"method": name, **evaluate(edit), "changed_weights": changed, "seconds": seconds.get(name, float("nan"))})
results = pd.DataFrame(rows)
results["localized"] = results["method"].isin(LOCALIZED)
results["retain_vs_unedited"] = results["retain"] / unedited["retain"]
results["meets_goal"] = (results["forget"] <= 0.10) & (results["retain_vs_unedited"] >= 0.90)
assert model.weights_hash() == start_hash
results.round(3)

# %% [markdown]
# ‖Δθ‖ per layer and module: unmasked methods spread the change over every block; the localized
# ones concentrate it.

# %%
delta_frame = pd.concat(deltas, ignore_index=True)
per_module = delta_frame[(delta_frame["weight"] == "all") & (delta_frame["metric"] == "delta_frobenius")]
per_layer = per_module.groupby(["method", "layer"], dropna=False)["value"].apply(lambda s: float((s**2).sum() ** 0.5))
per_layer.unstack("layer").reindex(list(edits)).round(3)

# %%
delta_by_layer(delta_frame)

# %% [markdown]
# The forget-vs-retain trade-off: each run is a point; SLUG contributes one point per Pareto tensor.

# %%
points = results[results["method"] != "unedited"][["method", "forget", "retain"]]
if len(slug_result.table):
    points = pd.concat([points, slug_result.table.assign(method="SLUG (per tensor)", forget=slug_result.table["forget_em"], retain=slug_result.table["retain_em"])[["method", "forget", "retain"]]], ignore_index=True)
tradeoff(points)

# %% [markdown]
# Measured in full mode (forget / retain exact match, retain as a share of the unedited model's):
# at the same λ = 5 and learning rate, the masks keep more of retain than the unmasked loop —
# SalUn+GradDiff 0.045 / 0.91, WAGLE+GradDiff 0.048 / 0.94, WAGLE+NPO 0.048 / 0.96 against
# GradDiff 0.046 / 0.86 and NPO 0.047 / 0.90 — and RMU (`W_out` of layers 0–2) reaches 0.089 /
# 0.98. SLUG's one-tensor step reaches the forget criterion on every Pareto tensor but costs most of
# retain (0.40 at best); Needle's one vector per person leaves 0.62 of the forget answers.

# %%
winners = results[results["localized"] & results["meets_goal"]]
print(winners[["method", "forget", "retain", "retain_vs_unedited", "forget_heldout", "retain_heldout"]].round(3).to_string(index=False))
if not QUICK:
    assert len(winners), "at least one localized method should reach forget <= 0.10 with retain >= 0.90 of unedited"

# %% [markdown]
# ## ConceptVectors on bios-tiny: do GA and NPO change the concept vector?
# A city is a concept: its reference token is the city's name. We locate its best value vector,
# unlearn every question whose answer is that city with GA and with NPO, and compare the vector
# before and after (cosine, relative L2, top-k Jaccard) with the Needle edit of the same vector.

# %%
from mechunlearn.verify.traces import vector_traces
from mechunlearn.world.target import Item, Target

city = world.person(split.meta["forget_people"][0])["birth_city"]
items = [i for i in split.where(paraphrase="trained").forget + split.where(paraphrase="trained").retain if i.answer == city]
others = seeded_subset([i for i in target.retain if i.answer != city], 256, seed=3)
texts = tuple(b for p in world.people for b in world.bios(p) if city in b)
city_target = Target(f"concept:{city}", tuple(items), tuple(others), forget_texts=texts)
city_scan = scan(model, {city: reference_ids(model, [city])}, progress=False)
site, sign = city_scan.best(city)[0], city_scan.selection(city, 1)[0].sign  # +1: bios-tiny's GELU MLP is scanned for promoted tokens
print(city, site, city_scan.selection(city, 1).to_frame()["top_tokens"].iloc[0][:8], f"{len(items)} questions")
concept_edits = {
    "GA": unlearn(model, city_target, UnlearnConfig(loss="ga", **COMMON)),
    "NPO": unlearn(model, city_target, LOOP["NPO"]),
    "Needle": needle(model, city_target, site, NeedleConfig(sigma=1.0, steps=20, lr=5e-2)),
}
trace_rows = []
for name, e in concept_edits.items():
    tr = vector_traces(model, [site], e, signs=[sign], method=name).frame
    with e.applied(model):
        em = float(score_items(model, list(city_target.forget), progress=False)["exact_match"].mean())
        em_other = float(score_items(model, list(city_target.retain), progress=False)["exact_match"].mean())
    trace_rows.append({"method": name, **tr.set_index("metric")["value"].to_dict(), "concept_em": em, "other_em": em_other})
concept_traces = pd.DataFrame(trace_rows)
assert model.weights_hash() == start_hash
concept_traces.round(3)
