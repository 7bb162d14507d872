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
# # Your data: the evaluation card on targets from files
#
# A forget set of your own — TOFU's files, WMDP-style multiple-choice questions, a JSONL of
# facts, a corpus — becomes a `Target` with `load_target` (README, "Your data"), and the card
# runs on it. Sections the data cannot feed (probes without `subject`/`attribute`,
# reintroduction without `context`, the truth ratio without paraphrased and perturbed answers,
# membership inference without holdout items) are skipped, with the reason in the card's
# provenance. We run:
#
# 1. `smollm2-135m` on a TOFU-layout folder and on a multiple-choice file from `tests/data/`;
# 2. `bios-tiny` on its own world exported in TOFU's layout, with its retain model as the oracle;
# 3. the same as a study file, `studies/your_data.yaml`.
#
# `MECHUNLEARN_NOTEBOOK_QUICK=1` (CI) uses the small bios-tiny and fewer unlearning steps.

# %%
import os
import tempfile
from pathlib import Path

import mechunlearn
from mechunlearn.data import export_tofu, load_target
from mechunlearn.models import load_model
from mechunlearn.models.bios_tiny import BiosTinyRecipe
from mechunlearn.unlearn import UnlearnConfig, unlearn
from mechunlearn.verify.attacks import AttackConfig
from mechunlearn.verify.card import CardConfig, card_summary, evaluation_card
from mechunlearn.verify.tofu import TofuConfig
from mechunlearn.world import World

QUICK = os.environ.get("MECHUNLEARN_NOTEBOOK_QUICK") == "1"
ROOT = Path(mechunlearn.__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"

# %% [markdown]
# ## 1. smollm2-135m on a TOFU-layout folder
# `tests/data/tofu/` holds `forget.json`, `retain.json` and `holdout.json` with TOFU's fields
# (`question`, `answer`, `paraphrased_answer`, `perturbed_answer`, `paraphrased_question`). A
# target read from split files is scored under TOFU's protocol (EOS counted, MIA on the answer).

# %%
tofu = load_target(DATA / "tofu")
print(tofu.meta["layout"], "layout, protocol", tofu.meta["protocol"], "|", len(tofu.forget), "forget,", len(tofu.retain), "retain,", len(tofu.holdout), "holdout items")
smol = load_model("smollm2-135m")
ga = UnlearnConfig(loss="ga", steps=6 if QUICK else 20, lr=1e-5, batch_size=8, stop_forget_em=None)
edit = unlearn(smol, tofu.where(paraphrase="trained"), ga)
card_config = CardConfig(
    sections=("behavior", "choice", "probes", "attacks", "mia", "tofu"),
    attack_names=("paraphrase", "reintroduce"),
    tofu=TofuConfig(max_new_tokens=8),
)
card = evaluation_card((smol, edit), None, None, tofu, card_config)  # no retain model for smollm2: forget_quality is left out
card_summary(card)

# %%
for section, why in card.provenance["skipped"].items():
    print(f"{section:>20}: skipped, {why}")
tofu_rows = card.frame.query("section == 'tofu' and metric != 'tofu_item'")
tofu_rows.pivot_table(index="metric", columns="model", values="value")

# %% [markdown]
# ## 2. smollm2-135m on a multiple-choice file
# `tests/data/choice.jsonl` is in the WMDP / MMLU layout (`question`, `choices`, `answer` index).
# The choice section scores each choice by its log-likelihood after the question, as
# lm-eval-harness does, and reports accuracy per split beside chance.

# %%
choice = load_target(DATA / "choice.jsonl")
choice_edit = unlearn(smol, choice, ga)
choice_card = evaluation_card((smol, choice_edit), None, None, choice, CardConfig(sections=("behavior", "choice", "mia", "tofu")))
print(choice_card.provenance["skipped"])
choice_card.frame.query("section == 'choice'").pivot_table(index=["split", "metric"], columns="model", values="value")

# %% [markdown]
# ## 3. bios-tiny's world, exported in TOFU's layout
# `export_tofu` (CLI: `mechunlearn export-tofu bios-tiny DIR`) writes the world's forget split as
# TOFU files; the same loader reads them back, so the built-in model runs the same path as your
# data. The retain model (trained without the forget people) is the oracle: `forget_quality`
# compares each model's truth ratios to its.

# %%
recipe = BiosTinyRecipe().small() if QUICK else BiosTinyRecipe()
tiny = load_model("bios-tiny", recipe=recipe)
oracle = load_model("bios-tiny", recipe=recipe, retain_for=0.1)  # or your own: load_model("retain_model_dir") / a .gguf
folder = export_tofu(World(recipe.world).target(0.1), Path(tempfile.mkdtemp()) / "bios_tiny_tofu", per_fact=1)
world_tofu = load_target(folder)
print(sorted(p.name for p in folder.iterdir()), "|", len(world_tofu.forget), "forget items")
tiny_edit = unlearn(tiny, world_tofu.where(paraphrase="trained"), UnlearnConfig(loss="ga", loss_options={"retain_weight": 1.0}, steps=200, lr=5e-5, batch_size=32, stop_forget_em=0.1, stop_every=5))
tiny_card = evaluation_card(
    (tiny, tiny_edit), None, oracle, world_tofu,
    CardConfig(sections=("behavior", "attacks", "mia", "tofu"), attack_names=("paraphrase", "reintroduce"), attacks=AttackConfig(), tofu=TofuConfig(max_retain_people=8, max_new_tokens=4)),
)
print(tiny_card.provenance["skipped"])
card_summary(tiny_card)

# %% [markdown]
# ## 4. The same as a study file
# `studies/your_data.yaml` names the same files as `file` targets (`oracle:` the retain model;
# `models:` which study models each file is crossed with). Run it with
# `mechunlearn study run studies/your_data.yaml`; here we only check it and list its runs.

# %%
from mechunlearn.study import load_study

study = load_study(ROOT / "studies" / "your_data.yaml")
for run in study.runs():
    print(f"{run.model.name:>14} | {run.target.params['path']:<28} | oracle {run.target.params['oracle']} | {run.label}")
