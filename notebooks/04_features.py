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
# # Feature space: SAE features and codebook codes
#
# Two ways to unlearn by switching off *features* instead of changing weights, on `bios-tiny` with
# the 10% forget split (the forget people's questions on the trained templates are the forget set):
#
# * **SAE clamping** (Farrell, Lau & Conmy 2024). An SAE trained with SAELens on the residual stream
#   at one site; latents that fire often on a forget person's prompts and rarely on retain prompts
#   are selected, the best ones of every forget person first; wherever a selected latent is active
#   it is clamped to −c and only the change Σ (f′ − f)·W_dec is added to the activation (the
#   SAE's reconstruction error is kept). Zero-ablation of the same latents is the comparator the
#   paper found ineffective.
# * **CodeUnlearn** (Wu et al. 2024) on a codebook bottleneck (Tamkin et al. 2023): the activation is
#   replaced by the mean of its top-k codes; codes chosen much more often on forget prompts than on
#   retain prompts are disabled, zero-shot (no gradient step). Random codes of the same number are
#   the comparator.
#
# Goal: SAE clamping reaches forget exact match ≤ 0.20 with retain ≥ 0.90 of the unedited model —
# or the measured trade-off curve shows why not. The last section runs SAE clamping on
# `smollm2-135m` for three concepts.
#
# `MECHUNLEARN_NOTEBOOK_QUICK=1` (what CI runs) uses the small world and small dictionaries and
# skips `smollm2-135m`; trained SAEs and codebooks are cached under `$MECHUNLEARN_HOME/features`.

# %%
import logging
import os
import time

import pandas as pd
import torch

from mechunlearn.figures.features import activation_histogram, clamp_sweep_curve, code_frequency_bars, code_usage_histogram, frequency_scatter
from mechunlearn.locate.codebook import CodebookConfig, CodebookEdit, CodeFrequency, code_frequencies, codebook_quality, ensure_codebook, random_codes
from mechunlearn.locate.saliency import seeded_subset
from mechunlearn.locate.sae import (
    FeatureClamp,
    SAEFeatureFrequency,
    SAETrainConfig,
    clamp_sweep,
    ensure_sae,
    latent_activations,
    sae_quality,
    world_corpus,
)
from mechunlearn.models import load_model
from mechunlearn.models.bios_tiny import BiosTinyRecipe
from mechunlearn.verify import exact_match_by_set
from mechunlearn.world import World

logging.getLogger("mechunlearn").setLevel(logging.WARNING)
torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads()))))
QUICK = os.environ.get("MECHUNLEARN_NOTEBOOK_QUICK") == "1"
T_START = time.perf_counter()
recipe = BiosTinyRecipe().small() if QUICK else BiosTinyRecipe()
model = load_model("bios-tiny", recipe=recipe)
world = World(recipe.world)
split = world.target(forget_frac=0.1, paraphrase="all")
target = split.where(paraphrase="trained")  # what the localizers see
heldout = split.where(paraphrase="heldout")  # the same people's facts in never-trained wordings
N_RETAIN = 150 if QUICK else 600
EVAL = {
    "forget": seeded_subset(target.forget, 120 if QUICK else None, seed=0),
    "retain": seeded_subset(target.retain, N_RETAIN, seed=1),
    "forget_heldout": seeded_subset(heldout.forget, 120 if QUICK else None, seed=2),
    "retain_heldout": seeded_subset(heldout.retain, N_RETAIN, seed=3),
}
SWEEP_SETS = {"forget": seeded_subset(EVAL["forget"], 600, seed=4), "retain": EVAL["retain"]}  # the sweep's (smaller) sets
corpus = world_corpus(model)
{k: len(v) for k, v in EVAL.items()}, len(corpus), model


# %%
def evaluate(edit=None) -> dict[str, float]:
    return exact_match_by_set(model, EVAL, edit, batch_size=128)


start_hash = model.weights_hash()
hooks_before = model.hook_count()
unedited = evaluate()
pd.Series(unedited, name="unedited").to_frame().T

# %% [markdown]
# ## 1. An SAE at the residual stream, trained with SAELens
#
# Site `blocks.2.hook_resid_post` (after the third of four blocks, where the probe-guided
# fact-lookup localisation finds the attributes becoming decodable). TopK SAE (Gao et al. 2024;
# SAELens' `TopKTrainingSAE` with its AuxK loss for dead latents), trained with SAELens'
# `SAETrainer` step on the activations of every token of the world's training documents (BOS left
# out). The papers' SAEs are 16k–131k latents on 2B–9B models; here 16× (full) or 2× (quick) the
# width of a 256-d residual stream. On the current build the site matters: at
# `blocks.1.hook_resid_post` (same SAE size) the best balanced clamp at retain ≥ 0.90 reached only
# forget 0.37 (0.23 at retain 0.89), at layer 2 forget 0.18–0.20.

# %%
HOOK = "blocks.2.hook_resid_post"
SAE_CFG = (
    SAETrainConfig(hook=HOOK, d_sae=512, k=16, steps=150, batch_size=512, lr=2e-3, dead_feature_window=50)
    if QUICK
    else SAETrainConfig(hook=HOOK, d_sae=4096, k=16, steps=3000, batch_size=1024, lr=1e-3, dead_feature_window=300)
)
t0 = time.perf_counter()
sae = ensure_sae(model, SAE_CFG, texts=corpus, progress=False)  # cached under $MECHUNLEARN_HOME/features, attached
print(f"SAE ready in {time.perf_counter() - t0:.1f} s: {sae}")
quality_texts = seeded_subset(corpus, 300 if QUICK else 1500, seed=5)
sae_q = sae_quality(model, sae, quality_texts, progress=False)
sae_q.frame[["metric", "value"]].set_index("metric").T.round(4)

# %% [markdown]
# ## 2. Feature selection: frequent on forget, rare on retain — for every forget person
#
# Firing frequency of every latent over the tokens of the forget prompts and of (a subset of) the
# retain prompts; score = (freq_forget + ε) / (freq_retain + ε) with ε = 10⁻³: "frequent on forget,
# rare on retain" as one number (on the full model this ranked better than the difference
# freq_forget − w·freq_retain). Farrell et al. rank over the whole forget set; with 20 forget
# people that ranking spends its budget on the people with the most distinctive latents and leaves
# others untouched. `per_subject=True` ranks the latents within each forget person and interleaves
# the rankings (every person's best latent, then every person's second …): at layer 2, 32 latents
# of the global ranking at c = 10 gave forget 0.20 at retain 0.87; 20 balanced latents at c = 12
# forget 0.18 at retain 0.91. The `subject` column says whose latent it is.

# %%
LOCATOR = SAEFeatureFrequency(hook=HOOK, score="ratio", eps=1e-3, per_subject=True, max_items=1000 if QUICK else 3000)
features = LOCATOR.locate(model, target, progress=False)
features.to_frame().head(24)[["site", "subject", "subject_rank", "freq_forget", "freq_retain", "mean_forget", "mean_retain"]].round(4)

# %%
frequency_scatter(features.to_frame(), selected=20)

# %% [markdown]
# ## 3. Sweep: clamp value c × number of features, and zero-ablation
#
# Every setting is applied from the unedited model and reverted exactly before the next.

# %%
VALUES = (5.0, 10.0, 20.0) if QUICK else (5.0, 8.0, 10.0, 12.0, 15.0, 20.0, 30.0)
COUNTS = (4, 16, 32) if QUICK else (5, 10, 15, 20, 25, 30, 40, 60)
t0 = time.perf_counter()
sweep = clamp_sweep(model, sae, features, SWEEP_SETS, values=VALUES, n_features=COUNTS, modes=("clamp", "zero"), progress=False)
print(f"{sweep[['mode', 'clamp_value', 'n_features']].drop_duplicates().shape[0]} settings in {time.perf_counter() - t0:.1f} s")
sweep_em = sweep[sweep["metric"] == "exact_match"].pivot_table(index=["mode", "clamp_value", "n_features"], columns="split", values="value").reset_index()
sweep_em["retain_vs_unedited"] = sweep_em["retain"] / unedited["retain"]
sweep_em.round(3)

# %%
clamp_sweep_curve(sweep)

# %% [markdown]
# The best clamp setting: the lowest forget exact match among the settings that keep retain at
# ≥ 0.90 of the unedited model's (ties: fewer features, then smaller c).

# %%
clamped = sweep_em[sweep_em["mode"] == "clamp"]
ok = clamped[clamped["retain_vs_unedited"] >= 0.90]
best = (ok if len(ok) else clamped).sort_values(["forget", "n_features", "clamp_value"]).iloc[0]
BEST_N, BEST_C = int(best["n_features"]), float(best["clamp_value"])
zero_same = sweep_em[(sweep_em["mode"] == "zero") & (sweep_em["n_features"] == BEST_N)].iloc[0]
print(f"best clamp: {BEST_N} features, c = {BEST_C:g}: forget {best['forget']:.3f}, retain {best['retain']:.3f} "
      f"({best['retain_vs_unedited']:.2f} of unedited); zero-ablation of the same {BEST_N}: forget {zero_same['forget']:.3f}, "
      f"retain {zero_same['retain']:.3f}")
sae_goal = bool(best["forget"] <= 0.20 and best["retain_vs_unedited"] >= 0.90)
print("goal (forget <= 0.20 with retain >= 0.90 of unedited):", "met" if sae_goal else "NOT met - see the trade-off curve above")

# %% [markdown]
# ### What the selected latents look like
# Activation of the top selected latents on the tokens where they fire, forget vs retain prompts.

# %%
hist_frame = latent_activations(
    model, sae, features.top(4), {"forget": [i.prompt for i in EVAL["forget"]], "retain": [i.prompt for i in EVAL["retain"]]}, progress=False
)
activation_histogram(hist_frame)

# %% [markdown]
# ## 4. Codebook features and CodeUnlearn
#
# A codebook at the same residual site: K codes, k = 8 per token (Tamkin et al.'s k; their K =
# 10,000 is for much larger models), trained on reconstruction with the model frozen
# (straight-through estimator). Inserted, it replaces the activation, so its own cost shows in the
# "codebook" row of the table below.

# %%
CB_CFG = (
    CodebookConfig(hook=HOOK, n_codes=1024, k=8, steps=200, batch_size=512, lr=2e-3, revive_every=50)
    if QUICK
    else CodebookConfig(hook=HOOK, n_codes=4096, k=8, steps=2000, batch_size=1024, lr=1e-3, revive_every=100)
)
t0 = time.perf_counter()
codebook = ensure_codebook(model, CB_CFG, texts=corpus, progress=False)
print(f"codebook ready in {time.perf_counter() - t0:.1f} s: {codebook}")
cb_q = codebook_quality(model, codebook, quality_texts, progress=False)
cb_q.frame[["metric", "value"]].set_index("metric").T.round(4)

# %% [markdown]
# CodeUnlearn: codes scored by how much more often they are chosen on forget prompts than on retain
# prompts; the top n are disabled — `mask`: their similarity set to −∞, so the next code takes the
# slot; `zero`: their contribution dropped from the mean (both are CodeUnlearn's options). The
# comparator disables n random codes among those that fire on these prompts at all.

# %%
codes = CodeFrequency(hook=HOOK, max_items=1000 if QUICK else 3000).locate(model, target, progress=False)
code_frame = codes.to_frame()
live = [int(i) for i in code_frame.loc[(code_frame["freq_forget"] + code_frame["freq_retain"]) > 0, "latent"]]
CODE_COUNTS = (32, 128) if QUICK else (32, 64, 128, 256, 512)
CODE_MODES = ("zero",) if QUICK else ("mask", "zero")
code_rows = [{"method": "codebook", "mode": "", "n_codes": 0, **evaluate(CodebookEdit(codebook))}]
for mode in CODE_MODES:
    for n in CODE_COUNTS:
        code_rows.append({"method": "CodeUnlearn", "mode": mode, "n_codes": n, **evaluate(CodebookEdit(codebook, codes.top(n), mode=mode))})
        code_rows.append({"method": "random codes", "mode": mode, "n_codes": n, **evaluate(CodebookEdit(codebook, random_codes(codebook, n, among=live, seed=n), mode=mode))})
code_sweep = pd.DataFrame(code_rows)
code_sweep["retain_vs_unedited"] = code_sweep["retain"] / unedited["retain"]
code_sweep.round(3)

# %%
code_frequency_bars(code_frame.assign(disabled=True), top=24)

# %%
usage = pd.concat(
    [
        code_frequencies(model, codebook, [i.prompt for i in EVAL[s]], progress=False).assign(split=s)
        for s in ("forget", "retain")
    ],
    ignore_index=True,
)
code_usage_histogram(usage)

# %% [markdown]
# ## 5. Results: forget, retain and held-out-template exact match per method
#
# CodeUnlearn's row uses the (mode, number of codes) with the lowest forget exact match among those
# that keep retain ≥ 0.90 of the unedited model (else the lowest forget); random codes use the same
# mode and number.

# %%
cu = code_sweep[code_sweep["method"] == "CodeUnlearn"]
cu_ok = cu[cu["retain_vs_unedited"] >= 0.90]
cu_best = (cu_ok if len(cu_ok) else cu).sort_values(["forget", "n_codes"]).iloc[0]
BEST_CODES, BEST_MODE = int(cu_best["n_codes"]), str(cu_best["mode"])
methods = {
    "SAE clamp": (FeatureClamp(sae, features.top(BEST_N), value=BEST_C), f"{BEST_N} latents, c={BEST_C:g}"),
    "SAE zero-ablation": (FeatureClamp(sae, features.top(BEST_N), mode="zero"), f"{BEST_N} latents"),
    "codebook": (CodebookEdit(codebook), f"K={codebook.n_latents}, k={codebook.k}"),
    "CodeUnlearn": (CodebookEdit(codebook, codes.top(BEST_CODES), mode=BEST_MODE), f"{BEST_CODES} codes, {BEST_MODE}"),
    "random codes": (CodebookEdit(codebook, random_codes(codebook, BEST_CODES, among=live, seed=0), mode=BEST_MODE), f"{BEST_CODES} codes, {BEST_MODE}"),
}
rows = [{"method": "unedited", "setting": "", **unedited}]
for name, (edit, setting) in methods.items():
    rows.append({"method": name, "setting": setting, **evaluate(edit)})
results = pd.DataFrame(rows)
results["retain_vs_unedited"] = results["retain"] / unedited["retain"]
results["meets_goal"] = (results["forget"] <= 0.20) & (results["retain_vs_unedited"] >= 0.90)
assert model.weights_hash() == start_hash, "feature edits never touch the weights"
assert model.hook_count() == hooks_before, "every hook edit removed its hook"
results.round(3)

# %% [markdown]
# What the table and the curves show (full mode, measured on the current build):
#
# * **Zero-ablation does almost nothing**, as Farrell et al. found: the selected latents are weakly
#   active (mean activation ≈ 0.01 on forget tokens), so removing their contribution barely moves
#   the residual stream (forget 0.98 with the same 20 latents). Negative clamping pushes the
#   activation *against* those directions wherever they fire, and that is what removes the answers.
# * **Clamping reaches the goal**: 20 latents (one per forget person) at c = 12 give forget 0.15
#   at retain 0.91 of unedited on the full evaluation sets (0.175 on the sweep's subset), and the
#   held-out templates follow (0.15): clamping acts on the person's representation, not on a
#   wording. Each person's second latent also fires for retain people who share a first name or a
#   surname, so beyond one latent per person retain falls as fast as forget.
# * **What it took.** The same SAE size at `blocks.1.hook_resid_post` reached only forget 0.37 at
#   retain ≥ 0.90 (balanced) or 0.45 (global ranking); at layer 2 the global ranking reached 0.25.
#   The dictionary must be wide and trained long enough to have person-specific latents: at layer 2,
#   1,024 latents / 600 steps gave forget 0.51 at retain 0.83 and 2,048 / 1,200 steps 0.64 at 0.90
#   (20 balanced latents or fewer, c = 10).
# * **The codebook bottleneck itself is the limit of CodeUnlearn here.** Replacing the residual
#   stream by the mean of 8 of 4,096 codes loses much of 200 people's facts before anything is
#   disabled (the "codebook" row: 0.56 / 0.60, LM loss +0.21). Disabling the codes most specific to
#   the forget prompts removes far more forget answers than disabling as many random live codes
#   (512 codes: 0.29 vs 0.54) — the selection is specific — but from that lowered baseline, so
#   retain stays far below 0.90 of the unedited model.

# %% [markdown]
# ## 6. SAE clamping on `smollm2-135m`: three concepts
#
# The SAE is trained on a corpus made locally: the model's own greedy continuations of 24 varied,
# topic-neutral openings plus every concept text, question and control question of
# `concept_defs/smollm2_135m.py` (about 6k tokens; generation without a KV cache is the slow part).
# Site `blocks.12.hook_resid_post` (of 30 blocks), TopK SAE with 2,048 latents (≈3.6× d_model),
# k = 32 — tiny by the paper's standards (Gemma-2B, 16k latents, billions of tokens): a small
# config, enough to show whether concept-specific latents exist and what clamping them does.
# For each concept, latents are selected on the concept's questions vs its unrelated control
# questions, and the clamp is swept.

# %%
SMOL_CONCEPTS = ("Japan", "France", "Germany")
if QUICK:
    print("quick mode: skipping the smollm2-135m section (run without MECHUNLEARN_NOTEBOOK_QUICK for it)")
else:
    from mechunlearn.locate.sae import SEED_PROMPTS, concept_corpus_texts, dictionary_dir, generated_corpus
    from mechunlearn.world.concept_defs import definitions

    smol = load_model("smollm2-135m")
    concepts = definitions("smollm2-135m")
    SMOL_HOOK = "blocks.12.hook_resid_post"
    SMOL_CFG = SAETrainConfig(hook=SMOL_HOOK, d_sae=2048, k=32, steps=800, batch_size=512, lr=1e-3, dead_feature_window=100)
    t0 = time.perf_counter()
    smol_corpus = None
    if not (dictionary_dir(smol, "sae", SMOL_CFG) / "mechunlearn_sae.json").exists():  # generate only when training
        smol_corpus = generated_corpus(smol, SEED_PROMPTS[:24], max_new_tokens=40, extra_texts=concept_corpus_texts(concepts))
    smol_sae = ensure_sae(smol, SMOL_CFG, texts=smol_corpus, progress=False)
    print(f"smollm2 SAE ready in {time.perf_counter() - t0:.1f} s: {smol_sae}, trained on {smol_sae.meta['n_train_tokens']} tokens")
    quality_smol = sae_quality(smol, smol_sae, concept_corpus_texts(concepts)[:200], progress=False)
    display(quality_smol.frame[["metric", "value"]].set_index("metric").T.round(4))  # noqa: F821 (Jupyter)

# %%
if not QUICK:
    smol_rows = []
    for name in SMOL_CONCEPTS:
        concept_target = concepts.target(name)
        sel = SAEFeatureFrequency(hook=SMOL_HOOK, score="ratio", eps=1e-3).locate(smol, concept_target, progress=False)
        sw = clamp_sweep(smol, smol_sae, sel, {"forget": concept_target.forget, "retain": concept_target.retain},
                         values=(10.0, 30.0, 100.0), n_features=(1, 2, 4, 8, 16, 32), modes=("clamp", "zero"), progress=False)
        em = sw[sw["metric"] == "exact_match"].pivot_table(index=["mode", "clamp_value", "n_features"], columns="split", values="value").reset_index()
        em.insert(0, "concept", name)
        em["top_latents"] = ", ".join(str(s.index[0]) for s in sel.top(4).sites)
        smol_rows.append(em)
    smol_sweep = pd.concat(smol_rows, ignore_index=True)
    base = smol_sweep[smol_sweep["mode"] == "none"].set_index("concept")
    smol_sweep["retain_vs_unedited"] = smol_sweep["retain"] / smol_sweep["concept"].map(base["retain"]).clip(lower=1e-9)
    picks = []
    for name, group in smol_sweep[smol_sweep["mode"] == "clamp"].groupby("concept", sort=False):
        good = group[group["retain_vs_unedited"] >= 0.90]
        picks.append((good if len(good) else group).sort_values(["forget", "n_features", "clamp_value"]).iloc[0])
    smol_best = pd.DataFrame(picks)[["concept", "clamp_value", "n_features", "forget", "retain", "retain_vs_unedited"]]
    smol_best.insert(3, "forget_unedited", smol_best["concept"].map(base["forget"]).to_numpy())
    display(smol_best.round(3))  # noqa: F821 (Jupyter)

# %%
if not QUICK:
    clamp_sweep_curve(smol_sweep[smol_sweep["concept"] == SMOL_CONCEPTS[0]].drop(columns="concept").melt(
        id_vars=["mode", "clamp_value", "n_features"], value_vars=["forget", "retain"], var_name="split", value_name="value").assign(metric="exact_match"))

# %%
print(f"notebook ran in {time.perf_counter() - T_START:.0f} s")
