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
# # Removed or hidden: the tamper suite, patching depth and a verdict per method
#
# Every method below makes `bios-tiny` stop *answering* the forget people's questions. Which of
# them took the knowledge out of the weights, and which only hid it? We attack each edited model
# and read its hidden states, always beside the **retain model** (trained without the forget
# people: exact unlearning, a model that never had the facts) under the very same attack:
#
# * **relearning** on half of the forget people, exact match on the *other* half, as a curve over
#   step budgets (full fine-tuning; LoRA too in full mode);
# * **retain-only fine-tuning**: train on retain questions only and watch the forget answers;
# * **quantization**: int8 and int4 round-to-nearest per output channel;
# * **Leak@k**: sample k answers (temperature 1, top-p 0.95), a leak when any names the answer;
# * **reintroduction**: the fact (or a fact one hop away) in the prompt;
# * **patching depth**: how much of the knowledge signal the edited model's hidden states still
#   carry, layer by layer, against the oracle's (a UDS-style score, `mechunlearn.verify.depth`).
#
# Every attack also reports the unedited model's score under it (its *ceiling*): an attack the
# unedited model fails cannot reveal anything and is marked not applicable. The verdict module
# (`mechunlearn.verify.verdict`) then reads the faithful verifiers against the oracle and calls
# each edit **removed**, **hidden**, **not forgotten** or **inconclusive**, with its evidence.
#
# Methods: GA, NPO, RMU, WAGLE+NPO, probe-guided fact lookup, LUNAR, UNDO (NPO distilled into a
# noised copy) and the retain model. `MECHUNLEARN_NOTEBOOK_QUICK=1` uses the small world (40
# people, 4 forget people: what CI runs) with small attack budgets and four of the methods (GA,
# NPO, fact lookup, UNDO: the others cost 10–15 s each to build there); the numbers are printed,
# and the conclusions are asserted only in full mode (the full `bios-tiny`, 200 people, 20 forget
# people).

# %%
import os
import time

import pandas as pd
import plotly.express as px

from mechunlearn import figures
from mechunlearn.models import load_model
from mechunlearn.models.bios_tiny import BiosTinyRecipe
from mechunlearn.study import METHODS
from mechunlearn.unlearn import UnlearnConfig, unlearn
from mechunlearn.unlearn.undo import UndoConfig, undo
from mechunlearn.verify.attacks import AttackConfig
from mechunlearn.verify.card import CardConfig, card_summary, card_verdicts, evaluation_card
from mechunlearn.verify.depth import DepthConfig
from mechunlearn.verify.probes import ProbeConfig
from mechunlearn.verify.verdict import VerdictConfig
from mechunlearn.world import World

QUICK = os.environ.get("MECHUNLEARN_NOTEBOOK_QUICK") == "1"
FINDINGS = not QUICK  # 4 forget people in quick mode (2 per relearning half): printed, not asserted
recipe = BiosTinyRecipe().small() if QUICK else BiosTinyRecipe()
model = load_model("bios-tiny", recipe=recipe)
retain = load_model("bios-tiny", recipe=recipe, retain_for=0.1)
world = World(recipe.world)
target = world.target(forget_frac=0.1)
trained = target.where(paraphrase="trained")  # what the edits train on
print(model, "|", len(target.meta["forget_people"]), "forget people", "| quick mode" if QUICK else "")

# %% [markdown]
# ## The edits
# GA and NPO as in notebook 06 (all non-embedding weights, a retain NLL term, early stop at
# forget exact match ≤ 0.1). UNDO's teacher *is* that NPO run (the loop is seeded, so UNDO's first
# stage reproduces it), distilled on retain text into the copy θ = 0.7·θ_NPO + 0.3·N. RMU,
# WAGLE+NPO, fact lookup and LUNAR are the study methods with the demo's settings
# (`studies/default.yaml`).

# %%
STOP = {"stop_forget_em": 0.1, "stop_every": 5, "stop_items": 300}
LOOP = {"loss_options": {"retain_weight": 1.0}, "steps": 200, "batch_size": 32, **STOP}
GA = UnlearnConfig(loss="ga", lr=5e-5 if QUICK else 3e-5, **LOOP)
NPO = UnlearnConfig(loss="npo", lr=5e-5, **LOOP)
# quick mode distils 40 steps of 16 items (CI time), full mode 200 of 32
UNDO = UndoConfig(unlearn=NPO, alpha=0.3, beta=1.0, steps=40 if QUICK else 200, batch_size=16 if QUICK else 32, lr=1e-3)
DEMO = {  # study methods, the demo's settings (stop_items: the early stop reads 300 forget questions)
    "rmu": {"steps": 60, "lr": 5e-3, "stop_forget_em": 0.08, "stop_every": 10, "stop_items": 300},
    "wagle_npo": {"keep_ratio": 0.1, "retain_weight": 5.0, "steps": 150, "lr": 3e-4, "stop_forget_em": 0.08, "stop_every": 5, "stop_items": 300},
    "fact_lookup": {"n_layers": 1, "steps": 60, "lr": 1e-3},
    "lunar": {"coef": 1.5},
}
NAMES = {"rmu": "RMU", "wagle_npo": "WAGLE+NPO", "fact_lookup": "fact lookup", "lunar": "LUNAR"}
STUDY = ("fact_lookup",) if QUICK else tuple(DEMO)


def study_edit(name: str, seed: int = 0):
    """A registered study method's edit, exactly as a study run makes it (locate, then edit)."""
    method = METHODS.get(name)
    params = {**method.params, **DEMO[name]}
    extra = {"selection": method.locate(model, trained, params, seed)} if method.locate else {}
    return method.edit(model, trained, params, seed, **extra)


edits, seconds = {}, {}
for name, build in {
    "GA": lambda: unlearn(model, trained, GA),
    "UNDO": lambda: undo(model, trained, UNDO),
    **{NAMES[n]: (lambda n=n: study_edit(n)) for n in STUDY},
}.items():
    start = time.perf_counter()
    edits[name] = build()
    seconds[name] = time.perf_counter() - start
edits = {"GA": edits["GA"], "NPO": edits["UNDO"].edits[0], **{k: v for k, v in edits.items() if k not in ("GA", "UNDO")}, "UNDO": edits["UNDO"]}
seconds["NPO"] = None  # built inside UNDO (its first stage)
pd.Series(seconds, name="seconds to build").round(1)

# %% [markdown]
# ## The card: behaviour, probes, the tamper suite and patching depth, on every model at once
# One `evaluation_card` call; the original and the retain model are scored once (their attack
# scores are the ceiling and the oracle of every row).

# %%
ATTACKS = ("few_shot", "reintroduce", "relearn", "retain_finetune", "quantize", "leak")
if QUICK:
    attack_config = AttackConfig(max_items=60, relearn_steps=6, relearn_eval_every=3, retain_ft_steps=3, leak_k=(1, 4), leak_max_items=30)
else:
    attack_config = AttackConfig(max_items=400, relearn_steps=30, relearn_eval_every=10, relearn_modes=("full", "lora"), retain_ft_steps=10, leak_k=(1, 4, 16), leak_max_items=150)
card_config = CardConfig(
    sections=("behavior", "probes", "attacks", "depth"),
    probes=ProbeConfig(templates_per_fact=2, positions=("question",)),
    attacks=attack_config,
    attack_names=ATTACKS,
    depth=DepthConfig(max_items=50 if QUICK else 200),
    max_items=200 if QUICK else 1000,
)
start = time.perf_counter()
card = evaluation_card({name: (model, edit) for name, edit in edits.items()}, model, retain, trained, card_config)
print(f"card: {len(card.frame)} rows in {time.perf_counter() - start:.0f} s;", {k: round(v) for k, v in card.provenance["seconds"].items()})
summary = card_summary(card)
ROLES = ["original", *edits, "retain"]
summary = summary.loc[ROLES]
summary[["exact_match:forget", "exact_match:retain", "probe_forget_best", "relearn_other_half_em", "quantize_int8_em", "quantize_int4_em", "depth_score"]].round(3)

# %% [markdown]
# ## Ceilings: which attacks can reveal anything here
# Each attack's mean forget score on the unedited model (its ceiling) and on the retain model
# (its oracle). `applicable` is False where the ceiling is below `min_ceiling` (0.5).

# %%
attacks = card.frame[card.frame["section"] == "attacks"]
heads = attacks[attacks["metric"].isin(["attack_exact_match", "relearn_exact_match", "leak_at_k", "leak_greedy"]) & (attacks["split"] == "forget")]
ceilings = heads.groupby("attack").agg(ceiling=("ceiling", "mean"), oracle=("oracle", "mean"), applicable=("applicable", "first"))
ceilings.round(3)

# %% [markdown]
# ## Relearning: the unseen half, over step budgets
# Fine-tuning on half of the forget people (NLL, the one loop); exact match on the other half,
# which was never shown. The retain model gets the same steps: what it reaches is what the steps
# teach, everything above it was still in the weights.

# %%
relearn = attacks[attacks["metric"] == "relearn_exact_match"]
figures.relearning_curves(relearn[relearn["attack"] == "relearn"])

# %%
other = relearn[relearn["half"] == "other"]
curves = other.pivot_table(index="model", columns=["attack", "step"], values="value").loc[ROLES]
curves.round(3)

# %% [markdown]
# ## Retain-only fine-tuning, quantization, Leak@k and reintroduction
# Forget exact match after each attack (Leak@k: the share of forget questions with a leak in
# k samples; reintroduction: with the fact, or the employer for a two-hop question, in context).

# %%
def forget_scores(frame: pd.DataFrame) -> pd.DataFrame:
    f = frame[frame["split"] == "forget"]
    cols = {}
    rft = f[(f["attack"] == "retain_finetune") & (f["metric"] == "attack_exact_match")]
    cols["retain-only FT (last step)"] = rft[rft["step"] == rft["step"].max()].set_index("model")["value"]
    for bits in attack_config.quant_bits:
        cols[f"int{bits}"] = f[(f["attack"] == f"quantize_int{bits}") & (f["metric"] == "attack_exact_match")].set_index("model")["value"]
    leak = f[f["metric"] == "leak_at_k"]
    for k in sorted(leak["k"].dropna().unique()):
        cols[f"leak@{int(k)}"] = leak[leak["k"] == k].set_index("model")["value"]
    cols["leak greedy"] = f[f["metric"] == "leak_greedy"].set_index("model")["value"]
    re_ = f[(f["attack"].str.startswith("reintroduce")) & (f["metric"] == "attack_exact_match")]
    for (attack, context), sub in re_.groupby(["attack", "context"]):
        cols[f"{attack.replace('reintroduce_', 'reintro ')}{' + context' if context else ''}"] = sub.set_index("model")["value"]
    cols["few-shot"] = f[(f["attack"] == "few_shot") & (f["metric"] == "attack_exact_match")].set_index("model")["value"]
    return pd.DataFrame(cols).loc[ROLES]


tamper = forget_scores(attacks)
tamper.round(3)

# %% [markdown]
# ## Patching depth
# Stage 1 patches the oracle's hidden states into the original layer by layer (the drop in the
# answer's log-probability marks the *knowledge layers*); stage 2 does the same with each edited
# model's states. Depth 1: the edited states are as free of the facts as the oracle's; 0: they
# still carry them (the edit changed only what is read out later). Logit lens: where the answer
# becomes readable.

# %%
depth = card.frame[card.frame["section"] == "depth"]
per_layer = depth[depth["metric"] == "patch_depth"].pivot_table(index="model", columns="layer", values="value").reindex([r for r in ROLES if r in edits])
drops = depth[(depth["metric"] == "patch_drop") & (depth["model"] == "retain")].set_index("layer")["value"]
print("oracle patch drop per layer (nats):", drops.round(2).to_dict())
per_layer.assign(depth_score=summary["depth_score"]).round(3)

# %%
lens = depth[depth["metric"] == "lens_top1"]
px.line(lens, x="layer", y="value", color="model", markers=True, title="logit lens: share of answer tokens that are the lens's top-1, forget items", labels={"value": "top-1"})

# %% [markdown]
# ## The verdicts
# `card_verdicts` reads the summary against the oracle with the margins of `VerdictConfig`
# (behaviour within 0.1 of the oracle; probes, relearning and quantization recovery within 0.05;
# patching depth ≥ 0.8): removed, hidden, not forgotten or inconclusive, with the evidence.

# %%
verdict_config = VerdictConfig()
verdict = card_verdicts(card, verdict_config).set_index("model").loc[list(edits)]
pd.set_option("display.max_colwidth", None)
verdict

# %% [markdown]
# ## The frontier: forget vs retain vs recovery
# Each edit at its forget and retain exact match; the marker's size and colour are the recovery
# above the oracle's — relearning on the unseen half (the largest of full and LoRA at the last
# step) or int4 quantization, whichever is larger. A removed edit sits at the oracle's corner
# (forget ≈ retain model's, retain ≈ 1) with no recovery.

# %%
last = other[other["step"] == other["step"].max()].groupby("model")["value"].max()
frontier = pd.DataFrame({
    "forget EM": summary["exact_match:forget"],
    "retain EM": summary["exact_match:retain"],
    "relearned (unseen half)": last,
    "int4": summary["quantize_int4_em"],
})
frontier["retain / unedited"] = frontier["retain EM"] / frontier.loc["original", "retain EM"]
frontier["recovery over oracle"] = (frontier[["relearned (unseen half)", "int4"]].sub(frontier.loc["retain", ["relearned (unseen half)", "int4"]]).max(axis=1)).clip(lower=0)
frontier.loc["original", "recovery over oracle"] = float("nan")  # nothing to recover: it never forgot
frontier = frontier.loc[ROLES]
frontier["verdict"] = verdict["verdict"].reindex(frontier.index).fillna("reference")
fig = px.scatter(
    frontier.reset_index(names="model"), x="forget EM", y="retain EM", text="model", symbol="verdict",
    size=frontier["recovery over oracle"].fillna(0).to_numpy() + 0.05, color="recovery over oracle", color_continuous_scale="Reds",
    title="forget vs retain vs recovery (size, colour: recovery above the retain model under relearning / int4)",
)
fig.update_traces(textposition="top center")
fig

# %%
frontier.round(3)

# %% [markdown]
# ## UNDO against its teacher
# The same attacks with the same budgets on the teacher (NPO), the UNDO student distilled from it,
# and the retain oracle. UNDO's claim (arXiv 2506.06278): the student keeps the teacher's
# behaviour but not its latent knowledge, so relearning and quantization recover less.

# %%
undo_table = pd.DataFrame({
    "forget EM": summary["exact_match:forget"],
    "retain EM": summary["exact_match:retain"],
    **{f"relearn step {s}": curves[("relearn", s)] for s in sorted(other[other["attack"] == "relearn"]["step"].unique())},
    **({f"LoRA relearn step {other['step'].max()}": curves[("relearn_lora", other["step"].max())]} if ("relearn_lora", other["step"].max()) in curves else {}),
    "int8": summary["quantize_int8_em"],
    "int4": summary["quantize_int4_em"],
    "retain-only FT": tamper["retain-only FT (last step)"],
    "probe (forget)": summary["probe_forget_best"],
    "depth score": summary["depth_score"],
}).loc[["NPO", "UNDO", "retain"]].rename(index={"NPO": "teacher (NPO)", "UNDO": "UNDO student", "retain": "retain (oracle)"})
undo_table.round(3)

# %% [markdown]
# ## Conclusions
# Asserted on the full model (quick mode prints the numbers only; 4 forget people are too few):
#
# 1. **GA and NPO hid the facts.** Relearning on half of the forget people brings the unseen half
#    back at least 0.5 above the oracle under the same steps, their probes read the forget
#    attributes more than the probe margin above the oracle's floor, and their verdict is
#    *hidden* with both checks named.
# 2. **Patching depth alone is not enough.** GA's and NPO's depth scores pass the 0.8 bar while
#    relearning recovers far above the oracle: their hidden states at the knowledge layers look
#    like the oracle's to the original's later layers, yet the weights still hold the facts.
# 3. **UNDO robustifies its teacher.** The student, distilled from the NPO teacher into a noised
#    copy, recovers at least 0.3 less than the teacher on the unseen half after full fine-tuning
#    and after LoRA with the same budgets, and its probes sit within the probe margin of the
#    oracle's floor; it pays in retain accuracy (below the teacher's).
# 4. **Among the edits that keep retain ≥ 0.9 of the unedited model, WAGLE+NPO is the closest to
#    removal**: the lowest relearning recovery of them and probes within the margin, still judged
#    *hidden* (relearning recovers more than 0.05 above the oracle).
# 5. **LUNAR's knowledge is dormant**: retain-only fine-tuning, which never shows a forget
#    answer, brings more than half of the forget answers back.
# 6. **Quantization does not undo any of these edits on bios-tiny**: int8 and int4 forget exact
#    match stay within 0.05 of each edit's own.
# 7. **The few-shot attack is not applicable here**: the unedited model's ceiling under it is
#    below 0.5, so its rows are marked and no verdict reads it.
# 8. **No edit is judged removed** at these budgets: the frontier above is the result.

# %%
verdict_of = verdict["verdict"]
for name in edits:
    print(f"{name}: {verdict_of[name]} — {verdict.loc[name, 'evidence']}")
gap = (last - last["retain"]).drop(["original", "retain"])
final = other[other["step"] == other["step"].max()].pivot_table(index="model", columns="attack", values="value")
floor = summary.loc["retain", "probe_forget_best"]
keeps = frontier.index[(frontier["retain / unedited"] >= 0.9) & frontier.index.isin(list(edits))]
quant_gap = pd.DataFrame({b: summary[f"quantize_int{b}_em"] - summary["exact_match:forget"] for b in attack_config.quant_bits}).drop(["original", "retain"])
print("relearning recovery above the oracle (largest of the modes, last step):", gap.round(3).to_dict())
print("unseen half at the last step, per mode:\n", final.round(3).to_string())
print("depth scores:", summary["depth_score"].drop(["original", "retain"]).round(3).to_dict())
print("edits keeping retain >= 0.9 of the unedited model:", list(keeps))
print("quantization recovery over each edit's own forget EM:\n", quant_gap.round(3).to_string())
print("verdict counts:", verdict_of.value_counts().to_dict())
if FINDINGS:
    for name in ("GA", "NPO"):
        assert gap[name] > 0.5, f"{name}: relearning should restore the unseen half far above the oracle"
        assert summary.loc[name, "probe_forget_best"] > floor + verdict_config.probe_margin, f"{name}: probes should read the facts above the floor"
        assert verdict_of[name] == "hidden" and {"probes", "relearning"} <= set(verdict.loc[name, "failed"].split(", ")), f"{name}: hidden, by probes and relearning"
        assert summary.loc[name, "depth_score"] >= verdict_config.min_depth, f"{name}: depth should pass while relearning fails"
    for mode in final.columns:
        assert final.loc["UNDO", mode] < final.loc["NPO", mode] - 0.3, f"UNDO should relearn ({mode}) much less than its teacher"
    assert summary.loc["UNDO", "probe_forget_best"] <= floor + verdict_config.probe_margin, "UNDO's probes should sit at the oracle's floor"
    assert summary.loc["UNDO", "exact_match:retain"] < summary.loc["NPO", "exact_match:retain"], "UNDO costs retain accuracy here"
    assert "WAGLE+NPO" in keeps and gap[list(keeps)].idxmin() == "WAGLE+NPO", "WAGLE+NPO should be the least recoverable edit that keeps retain"
    assert summary.loc["WAGLE+NPO", "probe_forget_best"] <= floor + verdict_config.probe_margin and verdict_of["WAGLE+NPO"] == "hidden"
    assert tamper.loc["LUNAR", "retain-only FT (last step)"] > 0.5, "retain-only fine-tuning should wake LUNAR's forget answers"
    assert (quant_gap.abs() <= 0.05).all().all(), "quantization should not undo the edits on bios-tiny"
    assert not ceilings.loc["few_shot", "applicable"], "the few-shot attack's ceiling should be below min_ceiling"
    assert (verdict_of != "removed").all(), "no edit reaches 'removed' at these budgets"

# %% [markdown]
# ## Which verifiers can be trusted
# The verdicts above lean on some verifiers more than others. Which ones deserve it? We build a
# population of models whose knowledge status is known (`mechunlearn.verify.meta`): models that
# hold the forget facts (the original, its retain-data fine-tunes and int4 copy, every unlearned
# model after relearning), models that never had them (the retain oracle, its fine-tunes and int4
# copy), and the unlearned models themselves. Then, as OpenUnlearning's meta-evaluation does
# (arXiv 2506.12618 §4): **faithfulness** is the AUC at telling the two pools apart, and
# **robustness** the harmonic mean of how little a verifier's score moves, relative to the oracle,
# under relearning (R) and quantization (Q) of the unlearned models. Quick mode builds a 10-model
# population (one GA edit) and scores the three cheapest verifiers; the full notebook builds 21
# models (GA and NPO at two strengths) and scores all eight (about 4 min, plus 10 min for the probes).

# %%
from mechunlearn.verify.meta import MetaConfig, PopulationConfig, meta_evaluate

if QUICK:
    population = PopulationConfig(methods=(("ga", GA),), perturb_lrs=(3e-4,), relearn_steps=10)
    meta_verifiers, meta_config = ("forget_em", "forget_prob", "quantize_int4_em"), MetaConfig(max_items=200)
else:
    population, meta_verifiers, meta_config = PopulationConfig(), None, MetaConfig()
start = time.perf_counter()
meta, meta_scores, pop = meta_evaluate(model, retain, target, population, meta_config, verifiers=meta_verifiers, progress=False)
print(f"{len(pop)} models, {len(meta)} verifiers in {time.perf_counter() - start:.0f} s")
meta.round(3)

# %%
figures.meta.faithfulness_robustness(meta)

# %%
# The population is what it claims: forget exact match tells the models that hold the facts from
# those that never had them, and GA's forgetting comes back under relearning faster than the
# oracle learns the facts (R < 1).
assert meta.loc["forget_em", "faithfulness"] >= 0.9
assert meta.loc["forget_em", "relearn_robustness"] < 1.0
print("most robust:", meta["robustness"].idxmax(), "| least robust:", meta["robustness"].idxmin())
