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
# # Hidden, not removed: probes and attacks after fine-tuning unlearning
#
# Gradient ascent (GA) and NPO make `bios-tiny` stop *answering* questions about the forget
# people. Does the knowledge leave the weights? We compare three models on the 10% forget split:
#
# * **original** — trained on everyone;
# * **ga**, **npo** — the original after fine-tuning unlearning;
# * **retain** — the same recipe trained *without* the forget people: exact unlearning, the
#   honest reference.
#
# and reproduce the three findings of `EVALS.md` with numbers:
#
# 1. linear probes on the residual stream still decode the forgotten attributes, well above the
#    retain model's floor;
# 2. relearning on half of the forget people restores the *other* half, far above what the retain
#    model reaches with the same steps;
# 3. in-context reintroduction brings the two-hop fact back for every model, the retain model
#    included.
#
# `MECHUNLEARN_NOTEBOOK_QUICK=1` uses the small world (40 people, what CI runs); without it the
# full `bios-tiny` (200 people) is used, built and cached on first use.

# %%
import os
import time

import pandas as pd

from mechunlearn import figures
from mechunlearn.models import load_model
from mechunlearn.models.bios_tiny import BiosTinyRecipe
from mechunlearn.unlearn import UnlearnConfig, unlearn
from mechunlearn.verify.attacks import AttackConfig
from mechunlearn.verify.behavior import behavior
from mechunlearn.verify.card import CardConfig, card_summary, evaluation_card
from mechunlearn.verify.mia import MIAConfig
from mechunlearn.verify.probes import ProbeConfig, probe_summary
from mechunlearn.verify.tofu import TofuConfig
from mechunlearn.world import World

QUICK = os.environ.get("MECHUNLEARN_NOTEBOOK_QUICK") == "1"
recipe = BiosTinyRecipe().small() if QUICK else BiosTinyRecipe()
# The small world's forget split has 4 people (2 per relearning half): too few for the findings to
# be measured reliably, so quick mode (CI) prints the numbers and asserts them only on the full model.
FINDINGS = not QUICK
if QUICK:
    print("quick mode: the findings are printed, not asserted (4 forget people); run the full notebook for them")
model = load_model("bios-tiny", recipe=recipe)
retain = load_model("bios-tiny", recipe=recipe, retain_for=0.1)
world = World(recipe.world)
target = world.target(forget_frac=0.1)                  # trained and held-out templates
trained = target.where(paraphrase="trained")             # what unlearning trains on
print(model, "|", len(target.meta["forget_people"]), "forget people")

# %% [markdown]
# ## Unlearn with GA and NPO
# Both train all non-embedding weights on the forget questions (trained templates) and stop once
# forget exact match is ≤ 0.05. The step counts and learning rates were tuned on this model so
# that forget exact match falls to about 0 while retain exact match stays high (the papers'
# defaults are for 7B models).

# %%
RETAIN_NLL = {"retain_weight": 1.0}
CONFIGS = {
    "ga": UnlearnConfig(loss="ga", loss_options=RETAIN_NLL, steps=200, lr=5e-5 if QUICK else 3e-5, batch_size=32, stop_forget_em=0.1, stop_every=5),
    "npo": UnlearnConfig(loss="npo", loss_options=RETAIN_NLL, steps=200, lr=5e-5, batch_size=32, stop_forget_em=0.1, stop_every=5),
}
edits = {}
for name, config in CONFIGS.items():
    start = time.perf_counter()
    edits[name] = unlearn(model, trained, config)
    print(f"{name}: {edits[name].meta['steps']} steps in {time.perf_counter() - start:.0f} s")

rows = []
for name, subject in {"original": None, **edits, "retain": None}.items():
    m = retain if name == "retain" else model
    if name in edits:
        with edits[name].applied(model):
            result = behavior(model, trained, splits=("forget", "retain"))
    else:
        result = behavior(m, trained, splits=("forget", "retain"))
    em = result.frame.query("metric == 'exact_match'").set_index("split")["value"]
    rows.append({"model": name, "forget EM": em["forget"], "retain EM": em["retain"]})
behaviour = pd.DataFrame(rows).set_index("model")
behaviour

# %%
for name in edits:
    assert behaviour.loc[name, "forget EM"] <= 0.1, f"{name} did not unlearn: tune its steps / lr"
    assert behaviour.loc[name, "retain EM"] >= 0.45, f"{name} destroyed the retain set: tune its steps / lr"  # GA and NPO cost retain (0.50 and 0.59 here)

# %% [markdown]
# ## The evaluation card
# One call runs the whole suite on both edits side by side: behaviour, probes, weight traces,
# activation shift, attacks, membership inference and the TOFU-style metrics.

# %%
card_config = CardConfig(
    # quick mode reads the question's last token only (where the findings below look)
    probes=ProbeConfig(templates_per_fact=2, positions=("question",)) if QUICK else ProbeConfig(templates_per_fact=4),
    attacks=AttackConfig(max_items=200, relearn_steps=15) if QUICK else AttackConfig(max_items=600),
    mia=MIAConfig(max_items=300 if QUICK else 1000),
    tofu=TofuConfig(max_retain_people=8 if QUICK else 40, max_qa_items=300 if QUICK else 1000),
    max_items=400 if QUICK else 1500,
)
start = time.perf_counter()
card = evaluation_card({name: (model, edit) for name, edit in edits.items()}, model, retain, target, card_config)
print(f"card: {len(card.frame)} rows in {time.perf_counter() - start:.0f} s")
summary = card_summary(card)
summary.T.round(3)

# %% [markdown]
# ## Finding 1 — probes still decode the forgotten attributes
# Per-layer probes trained on retain people, read at the question's last token (bios-tiny reads
# the attribute out there; at the subject's last token even the unedited model's probes barely
# beat chance on new people), tested on the forget people. The retain model never saw them: its
# accuracy is the floor.

# %%
figures.probe_heatmap(card.frame, position="question", split="forget")

# %%
# the question's last token: in bios-tiny the attribute is read out there, not at the subject
best = probe_summary(card, split="forget").xs("refit", axis=1, level="reading").loc["question"]
best["chance"] = [1 / len({i.answer for i in target.forget + target.retain if i.attribute == a}) for a in best.index]
best.round(3)

# %%
floor = best["retain"].mean()
for name in edits:
    print(f"{name}: best-layer forget probe accuracy {best[name].mean():.2f} vs retain floor {floor:.2f} (original {best['original'].mean():.2f})")
    if FINDINGS:
        assert best[name].mean() > floor + 0.15, f"{name}: probes should decode the forgotten attributes above the retain floor"

# %% [markdown]
# ## Finding 2 — relearning half restores the other half
# A few fine-tuning steps (the one training loop, NLL) on half of the forget people; exact match
# on the *other* half, which was never relearned. The retain model gets the same steps.

# %%
figures.relearning_curves(card.frame)

# %%
relearn = card.frame.query("metric == 'relearn_exact_match' and half == 'other'")
last = relearn[relearn["step"] == relearn["step"].max()].set_index("model")["value"]
first = relearn[relearn["step"] == 0].set_index("model")["value"]
pd.DataFrame({"before relearning": first, "after relearning": last}).round(3)

# %%
for name in edits:
    print(f"{name}: unseen half {first[name]:.2f} -> {last[name]:.2f}; retain model -> {last['retain']:.2f}")
    if FINDINGS:
        assert last[name] > last["retain"] + 0.2, f"{name}: relearning should restore the unseen half well above the retain model"

# %% [markdown]
# ## Finding 3 — in-context reintroduction works, exact unlearning included
# The prompt states the employer ("<name> works for <employer> .") and asks the work city (a
# two-hop question: employer → the employer's city, a fact about the company, not the person).

# %%
reintro = card.frame.query("metric == 'attack_exact_match' and attack == 'reintroduce_two_hop' and split == 'forget'")
table = reintro.pivot_table(index="model", columns="context", values="value").rename(columns={False: "no context", True: "fact in context"})
table.round(3)

# %%
for name in (*edits, "retain"):
    print(f"{name}: two-hop work city {table.loc[name, 'no context']:.2f} -> {table.loc[name, 'fact in context']:.2f} with the employer in context")
    if FINDINGS:
        assert table.loc[name, "fact in context"] > table.loc[name, "no context"] + 0.2, f"{name}: reintroduction should bring the fact back"

# %% [markdown]
# ## Also on the card
# Membership inference (Min-K%: forget people vs people never seen), the TOFU-style metrics
# (forget quality is the KS-test p-value against the retain model), and where the weights moved.

# %%
figures.mia_roc(card.frame, attack="min_k")

# %%
summary[["forget_quality", "forget_truth_ratio", "retain_utility", "mia_min_k", "privleak"]].round(3)

# %%
figures.delta_by_layer(card.frame.query("section == 'weights'"), metric="rel_frobenius")
