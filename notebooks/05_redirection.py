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
# # Redirection and fact lookup: LUNAR and probe-guided localisation
#
# On `bios-tiny` with the 10% forget split (forget people's questions on the *trained* templates
# are what the methods see; held-out templates test generalisation):
#
# * **LUNAR** (Shen et al. 2025): the direction from "cannot answer" activations (questions about
#   the world's non-existent people, answered `unknown`) minus forget activations, the layer
#   chosen by a steering sweep, and one MLP's `W_out` fitted so that forget prompts are
#   *redirected* to `unknown` — by the closed-form ridge solution and by AdamW, compared. We
#   measure the share of forget questions answered `unknown` versus other wrong answers.
# * **Probe-guided fact-lookup localisation** (Guo et al. 2024): per-layer attribute probes on
#   the subject's last token find the layers where the attribute becomes decodable; only those
#   MLPs are fine-tuned (forget loss −log(1−p) plus retain NLL), against random layers' MLPs and
#   full fine-tuning at a matched parameter budget.
#
# Then LUNAR on `smollm2-135m` for three concepts. Set `MECHUNLEARN_NOTEBOOK_QUICK=1` for the
# small world (what CI runs, about a minute; smollm2 is skipped there).

# %%
import logging
import os
import time
from dataclasses import replace

import pandas as pd
import torch

from mechunlearn.figures import redirection as figs
from mechunlearn.locate.lunar import (
    LunarConfig,
    activation_shift,
    answer_outcomes,
    cannot_answer_items,
    choose_layer,
    compare_fits,
    fit_lunar_edit,
    lunar_data,
    outcome_shares,
    steering_sweep,
)
from mechunlearn.locate.saliency import seeded_subset
from mechunlearn.models import load_model
from mechunlearn.models.bios_tiny import BiosTinyRecipe
from mechunlearn.verify import exact_match_by_set, score_items
from mechunlearn.world import World

logging.getLogger("mechunlearn").setLevel(logging.WARNING)
torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads()))))
QUICK = os.environ.get("MECHUNLEARN_NOTEBOOK_QUICK") == "1"
T0 = time.perf_counter()
recipe = BiosTinyRecipe().small() if QUICK else BiosTinyRecipe()
model = load_model("bios-tiny", recipe=recipe)
world = World(recipe.world)
split = world.target(forget_frac=0.1, paraphrase="all")
target = split.where(paraphrase="trained")  # what the methods fit on
heldout = split.where(paraphrase="heldout")  # the same people's facts in never-trained wordings
N_EVAL = 200 if QUICK else 600
EVAL = {
    "forget": list(target.forget),
    "retain": seeded_subset(target.retain, N_EVAL, seed=1),
    "forget_heldout": list(heldout.forget),
    "retain_heldout": seeded_subset(heldout.retain, N_EVAL, seed=2),
}
{k: len(v) for k, v in EVAL.items()}, model


# %%
def evaluate(edit=None) -> dict[str, float]:
    return exact_match_by_set(model, EVAL, edit)


start_hash, start_hooks = model.weights_hash(), model.hook_count()
unedited = evaluate()
pd.Series(unedited, name="unedited").to_frame().T

# %% [markdown]
# ## LUNAR: the "cannot answer" direction
#
# The model was trained to answer `unknown` about people who do not exist. r_l is the mean
# residual (after block l, last prompt token) on those questions minus the mean on the forget
# questions. First: what the unedited model answers on both sets.

# %%
cannot = cannot_answer_items(model)
CFG = LunarConfig(
    coef=2.0,  # the paper's c
    ridge=1e-3,
    retain_items=256 if QUICK else 512,
    cannot_items=128 if QUICK else 256,
    sweep_items=40 if QUICK else 200,
    adamw_steps=100 if QUICK else 400,
)
data = lunar_data(model, target, CFG, progress=False)
cannot_said = answer_outcomes(model, data.cannot[:100])  # their answer *is* "unknown"
print(f"non-existent people answered 'unknown': {(cannot_said['generated'] == 'unknown').mean():.2f}; "
      f"forget questions answered correctly: {outcome_shares(answer_outcomes(model, data.forget[:100]))['share_correct']:.2f}")
pd.DataFrame({"layer": range(model.n_layers), "norm_r": data.directions.norm(dim=-1).tolist()}).round(2)

# %% [markdown]
# ## Steering sweep: which layer?
#
# For each layer, c·r_l is added at `blocks.l.hook_resid_post` at the last prompt token (a
# `HookEdit`), and the greedy answers are classified: correct, `unknown`, another valid value
# (a wrong fact), or other (gibberish). The steering hook acts on every prompt it sees, so
# retain prompts turn `unknown` too: that is what the weight edit has to avoid. The sweep also
# fits the ridge edit at every layer ("edit" panel) — that is what the layer choice scores.

# %%
t0 = time.perf_counter()
coefs = [2.0] if QUICK else [1.0, 2.0]
sweep = steering_sweep(model, data, CFG, coefs=coefs, progress=False)
layer = choose_layer(sweep, coef=CFG.coef)
print(f"sweep in {time.perf_counter() - t0:.1f} s; chosen layer {layer}")
sweep[sweep["metric"].isin(["share_unknown", "share_correct"])].pivot_table(index=["mode", "coef", "layer"], columns=["split", "metric"], values="value").round(3)

# %%
figs.steering_sweep(sweep, coef=CFG.coef)

# %% [markdown]
# ## Fitting `W_out`: closed-form ridge vs AdamW
#
# Both minimise the same objective (forget rows: MLP output + c·r_l; retain rows: unchanged;
# ridge penalty on Δ). Ridge is one linear solve; AdamW (lr 1e-2, the paper's optimiser) runs
# through the one training loop on the cached activations.

# %% [markdown]
# `objective` is J(Δ) (lower is better; ridge is its exact minimum), `forget_error` the relative
# residual of the redirection on forget rows, `retain_error` the change on retain rows relative
# to it, `rel_dist_to_ridge` how far AdamW's Δ is from the optimum. In the full run (4 layers,
# 1,024 hidden units, about 8,000 rows) ridge took under a second; AdamW at lr 1e-2 for 400 steps
# took about a minute and stopped 14% above the optimum, with Δ still 49% away from it — and its
# retain accuracy is correspondingly lower. The closed form is the better tool for a linear fit.

# %%
fits, lunar_edits = compare_fits(model, data, layer, CFG)
assert model.hook_count() == start_hooks and model.weights_hash() == start_hash
fits.round(4)

# %%
rows = []
for method, edit in lunar_edits.items():
    assert list(edit.deltas) == [f"blocks.{layer}.mlp.W_out"]  # one matrix
    em = evaluate(edit)
    f_out = answer_outcomes((model, edit), EVAL["forget"])
    h_out = answer_outcomes((model, edit), EVAL["forget_heldout"])
    rows.append({"method": f"LUNAR {method}", **em, **{f"forget_{k}": v for k, v in outcome_shares(f_out).items()},
                 "heldout_share_unknown": outcome_shares(h_out)["share_unknown"]})
lunar_table = pd.DataFrame(rows)
assert model.hook_count() == start_hooks and model.weights_hash() == start_hash  # no hooks remain, exact revert
lunar_table.round(3)

# %% [markdown]
# Forget answers under the ridge edit: most turn into `unknown` (a redirection), not into
# gibberish or another person's fact.

# %%
with lunar_edits["ridge"].applied(model):
    examples = answer_outcomes(model, EVAL["forget"][:: max(1, len(EVAL["forget"]) // 8)])
examples[["prompt", "answer", "generated", "outcome"]]

# %% [markdown]
# ## Trade-off: the coefficient c
#
# Stronger redirection removes more forget answers and costs more retain accuracy. One ridge fit
# per c at the chosen layer.

# %%
curve = []
for c in ([1.0, 2.0, 3.0] if QUICK else [0.5, 1.0, 1.5, 2.0, 3.0, 4.0]):
    edit, _ = fit_lunar_edit(model, data, layer, replace(CFG, coef=c), method="ridge")
    em = evaluate(edit)
    curve.append({"method": "LUNAR ridge", "label": f"c={c:g}", "coef": c, **em, "retain_vs_unedited": em["retain"] / unedited["retain"]})
curve = pd.DataFrame(curve)
curve.round(3)

# %%
figs.tradeoff_curve(curve)

# %% [markdown]
# ## Activation shift at the edit site
#
# Change of `blocks.l.hook_mlp_out` at the last prompt token caused by the ridge edit, projected on
# r̂_l: forget prompts move by about c·‖r_l‖, retain prompts (and held-out-template forget
# prompts, never seen by the fit) show how selective the linear map is.

# %%
shift = activation_shift(
    model, lunar_edits["ridge"], layer,
    {"forget": EVAL["forget"], "forget_heldout": EVAL["forget_heldout"], "retain": EVAL["retain"][:200]},
    data.directions[layer],
)
print(f"c·‖r‖ = {CFG.coef * float(data.directions[layer].norm()):.2f}")
shift.groupby("split")[["shift_along", "shift_norm", "base_norm"]].mean().round(3)

# %%
figs.activation_shift(shift)

# %%
# %% [markdown]
# ### The goal: forget exact match ≤ 0.20 with retain ≥ 0.90 of the unedited model's
#
# With the paper's c = 2 the redirection can overshoot on this small model (retain answers near
# the forget people's activations turn `unknown` too); the trade-off curve above shows where it
# stops paying. The coefficient reported in the final table is the curve's setting that meets the
# goal with the lowest forget exact match (ties: higher retain).

# %%
best = lunar_table.set_index("method").loc["LUNAR ridge"]
meets = best["forget"] <= 0.20 and best["retain"] >= 0.90 * unedited["retain"]
print(f"LUNAR ridge, c = {CFG.coef:g}, layer {layer}: forget EM {best['forget']:.3f}, retain EM {best['retain']:.3f} "
      f"({best['retain'] / unedited['retain']:.3f} of unedited), forget answered unknown {best['forget_share_unknown']:.3f} -> goal {'met' if meets else 'NOT met'}")
goal = curve[(curve["forget"] <= 0.2) & (curve["retain_vs_unedited"] >= 0.9)]
print("settings of the trade-off curve that meet the goal:", goal["label"].tolist() or "none")
print(goal[["label", "forget", "retain", "retain_vs_unedited"]].round(3).to_string(index=False))
c_goal = float(goal.sort_values(["forget", "retain"], ascending=[True, False]).iloc[0]["coef"]) if len(goal) else None

# %% [markdown]
# ## Probe-guided fact-lookup localisation (Guo et al. 2024)
#
# Per-layer linear probes (the batched probes of `mechunlearn.verify.probes`) for each attribute,
# trained on retain people and read on *held-out* retain people, at the subject's last token (the
# paper's site) and at the question's last token. Layer −1 is the embedding. Holdout people (never
# trained) are the chance floor.

# %%
from mechunlearn.locate.fact_lookup import (
    FactLookupConfig,
    best_position,
    choose_fact_layers,
    compare_localisations,
    layer_probe_profile,
    layer_rise,
)
from mechunlearn.unlearn import UnlearnConfig

t0 = time.perf_counter()
FL = FactLookupConfig(
    n_layers=1,
    unlearn=UnlearnConfig(loss="forget_prob", loss_options={"retain_weight": 1.0}, steps=30 if QUICK else 60, lr=1e-3,
                          batch_size=32, stop_forget_em=0.05, stop_every=5),
)
profile = layer_probe_profile(model, target, FL)
position = best_position(profile)
fact_layers = choose_fact_layers(profile, n_layers=FL.n_layers, position=position)
print(f"probes in {time.perf_counter() - t0:.1f} s; position {position!r}; rise per layer {layer_rise(profile, position=position).round(3).to_dict()}; fact-lookup layers {fact_layers}")
profile.groupby(["position", "split", "layer"])["value"].mean().unstack("layer").round(3)

# %% [markdown]
# In bios-tiny the attribute is **not** linearly decodable at the subject's last token on held-out
# people (accuracy stays near the holdout floor at every layer): the questions name the attribute
# *before* the subject, and this small model looks the fact up at the final token. So the rise is
# read at the question's last token (`position="auto"` picks it); that is where the fact becomes
# decodable, layer by layer.

# %%
figs.probe_layers(profile[(profile["position"] == position) & profile["split"].isin(["retain", "holdout"])], chosen=fact_layers,
                  title=f"Attribute probe accuracy ({position} token; retain = held-out retain people)")

# %% [markdown]
# ### Fine-tuning only the fact-lookup MLPs, against matched budgets
#
# The one loop with −log(1−p(answer)) on forget plus the retain NLL, stopped at forget exact
# match ≤ 0.05. Comparators: the MLPs of as many random other layers (the same parameter count),
# the same number of weights scattered over every block weight, and full fine-tuning (every
# block weight; not budget-matched).

# %%
t0 = time.perf_counter()
methods = ("fact_lookup", "random_layers", "full") if QUICK else ("fact_lookup", "random_layers", "random_weights", "full")
loc_table, loc_runs = compare_localisations(model, target, fact_layers, FL, evaluate=evaluate, methods=methods, progress=False)
assert model.weights_hash() == start_hash
print(f"{len(methods)} fine-tunes in {time.perf_counter() - t0:.1f} s")
loc_table.pivot_table(index=["method", "layers", "budget", "changed", "steps"], columns="split", values="value").round(3)

# %% [markdown]
# ## Results: every method on the same table
#
# Forget, retain and held-out-template exact match (greedy), with the share of the budget each
# method changed.

# %%
results = [{"method": "unedited", **unedited, "changed_weights": 0}]
n_w_out = model.weight(f"blocks.{layer}.mlp.W_out").numel()
for _, row in lunar_table.iterrows():
    results.append({"method": f"{row['method']} (c={CFG.coef:g})", **{k: row[k] for k in EVAL}, "changed_weights": n_w_out})
if c_goal is not None and c_goal != CFG.coef:
    row = curve.set_index("coef").loc[c_goal]
    results.append({"method": f"LUNAR ridge (c={c_goal:g})", **{k: row[k] for k in EVAL}, "changed_weights": n_w_out})
for method, run in loc_runs.items():
    wide = loc_table[loc_table["method"] == method].set_index("split")["value"]
    results.append({"method": f"FT {method}", **wide.to_dict(), "changed_weights": run.budget})
results = pd.DataFrame(results)
results["retain_vs_unedited"] = results["retain"] / unedited["retain"]
results["meets_goal"] = (results["forget"] <= 0.20) & (results["retain_vs_unedited"] >= 0.90)
assert model.weights_hash() == start_hash and model.hook_count() == start_hooks
results.round(3)

# %% [markdown]
# ### Hidden or removed? Probes after each edit
#
# Behaviour is only half the story. Probes refit on each edited model (``refit``) and the
# original's probes applied to it (``transfer``) read the forget people's attributes at the
# question token, per layer (forget people; the probes are trained on retain people). LUNAR
# changes one MLP's output at layer l, so the residual stream *before* layer l is bitwise the
# original's and the attribute stays exactly as decodable there: the answer is redirected
# downstream of where it was looked up. A masked fine-tune changes only its layers, so probes
# read before its first layer are unchanged too.

# %%
from mechunlearn.verify.probes import ProbeConfig, probe_accuracy

probe_models = {"original": model, "LUNAR ridge": (model, lunar_edits["ridge"]), **{f"FT {k}": (model, r.edit) for k, r in loc_runs.items()}}
latent = probe_accuracy(probe_models, target, ProbeConfig(positions=("question",), templates_per_fact=2 if QUICK else 4), reference="original", progress=False)
assert model.weights_hash() == start_hash
lat = latent.frame[latent.frame["split"] == "forget"]
lat_table = lat.groupby(["reading", "model", "layer"])["value"].mean().unstack("layer")
if layer > 0:
    same = (lat_table.loc[("refit", "LUNAR ridge"), :layer - 1] - lat_table.loc[("refit", "original"), :layer - 1]).abs().max()
    print(f"LUNAR edits layer {layer}: refit probe accuracy on forget people before it differs from the original's by {same:.3f}")
lat_table.round(3)

# %% [markdown]
# ## LUNAR on smollm2-135m
#
# SmolLM2-135M rarely says it does not know: asked about an invented person it confabulates
# ("The birthplace of Zorvath Quellin is a small village nestled in …"). In a few-shot frame that
# mixes known facts with "… is unknown." it answers "unknown" for invented people and keeps
# answering known facts (checked below), so the "cannot answer" prompts, the forget questions
# (a concept's questions) and the retain questions (unrelated ones) are all put in that frame. We
# also score the concept's questions *without* the frame: does the edit remove the answer there,
# too?

# %%
if QUICK:
    print("quick mode: skipping the smollm2-135m section (loading the model alone takes about 20 s)")
else:
    from mechunlearn.locate.lunar import SMOLLM2_FRAME, framed, lunar
    from mechunlearn.world.concept_defs import definitions

    smol = load_model("smollm2-135m")
    smol_cannot = cannot_answer_items(smol)
    known = [SMOLLM2_FRAME + p for p in ("The capital of France is", "The currency of Japan is the", "The largest planet is")]
    print("frame check:", dict(zip(known, smol.generate(known, 3))))
    print("cannot answer:", outcome_shares(answer_outcomes(smol, smol_cannot)))
    concepts = definitions("smollm2-135m")
    # every 4th layer and 3 generated tokens keep the sweep to about 2 minutes per concept on 2 CPU cores
    SMOL_CFG = LunarConfig(layers=tuple(range(3, smol.n_layers, 4)), coef=2.0, sweep_items=None, retain_items=None, cannot_items=None, max_new_tokens=3)
    smol_rows, smol_sweeps = [], []
    for name in ("Japan", "France", "Moon"):
        raw = concepts.target(name)
        tgt = framed(raw, SMOLLM2_FRAME)
        t0 = time.perf_counter()
        res = lunar(smol, tgt, SMOL_CFG, cannot=smol_cannot, progress=False)
        smol_sweeps.append(res.sweep.assign(concept=name))

        def smol_scores(label):
            f_out = answer_outcomes(smol, tgt.forget)
            em = {f"{k}_em": float(score_items(smol, list(v), progress=False)["exact_match"].mean())
                  for k, v in (("forget", tgt.forget), ("retain", tgt.retain), ("forget_unframed", raw.forget), ("retain_unframed", raw.retain))}
            return {"concept": name, "edit": label, **em, **{f"forget_{k}": v for k, v in outcome_shares(f_out).items()}, "example": f_out["generated"].iloc[0]}

        smol_rows.append(smol_scores("unedited"))
        with res.edit.applied(smol):
            smol_rows.append(smol_scores(f"LUNAR W_out@{res.layer}"))
        print(f"{name}: layer {res.layer}, {time.perf_counter() - t0:.0f} s, fit forget residual {res.fit.forget_error:.3f}")
    smol_table = pd.DataFrame(smol_rows)
    display(smol_table.round(3))  # noqa: F821 (IPython)

# %%
if not QUICK:
    sw = pd.concat(smol_sweeps, ignore_index=True)
    display(sw[(sw["mode"] != "none") & sw["metric"].isin(["share_unknown", "share_correct"])]  # noqa: F821
            .pivot_table(index=["concept", "layer"], columns=["mode", "split", "metric"], values="value").round(2))
    fig = figs.steering_sweep(sw[sw["concept"] == "Japan"], coef=2.0)
    fig.update_layout(title="smollm2-135m, concept Japan: LUNAR steering sweep (c = 2)")
    display(fig)  # noqa: F821

# %% [markdown]
# ## What the full run showed (bios-tiny 10% split; smollm2-135m)
#
# * **LUNAR** picks layer 2 of 4. At the paper's c = 2 every forget question — trained and held-out
#   wordings — is answered `unknown` (none with gibberish or another person's fact), but retain
#   exact match falls to 0.895 of the unedited model's, just short of the 0.90 goal; c = 1.5 meets
#   it (forget 0.02, retain 0.945). Held-out-template *retain* questions suffer most (0.74 at
#   c = 2). Refit probes still decode forget people's attributes at every layer (identical below
#   the edit, 0.79–0.84 at and after it vs the original's 0.82–0.92): LUNAR redirects the answer,
#   it does not remove the lookup.
# * **Fact lookup**: the attribute becomes decodable at the question token, rising most over
#   layers 1–2; at the subject token never. Fine-tuning layer 1's MLP, a random layer's MLP, or the
#   same number of scattered weights all reach forget ≤ 0.05 with retain ≥ 0.95; full fine-tuning
#   at the same learning rate costs retain (0.61). The difference is latent knowledge: after the
#   fact-lookup fine-tune, refit probes read forget attributes at 0.24–0.39 (original 0.24–0.92),
#   after a random later layer's fine-tune the earlier layers still hold them (0.82 at layer 2).
# * **smollm2-135m** (Japan, France, Moon): in the few-shot "unknown" frame, LUNAR at layers
#   19–23 turns 100% of forget answers into "unknown" with retain accuracy unchanged; outside the
#   frame the concept questions lose their answers too for Japan and Moon (exact match 1.0 → 0.0),
#   partly for France (1.0 → 0.67).

# %%
print(f"notebook ran in {time.perf_counter() - T0:.0f} s")
