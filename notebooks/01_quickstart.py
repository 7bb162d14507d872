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
# # mechunlearn quickstart
#
# `bios-tiny` is a small transformer trained here on a synthetic world of fictitious people, so we
# know exactly which facts it holds. This notebook loads it, shows one person's facts next to the
# model's answers, caches activations at a few sites, and applies and reverts one weight edit.
#
# Set `MECHUNLEARN_NOTEBOOK_QUICK=1` to use the small world (what CI does); the full model is
# built on first use (about 4 minutes on 2 cores) and cached under `$MECHUNLEARN_HOME`.

# %%
import os

import torch

from mechunlearn.core import Site, WeightEdit
from mechunlearn.models import load_model
from mechunlearn.models.bios_tiny import BiosTinyRecipe
from mechunlearn.verify import behavior
from mechunlearn.world import World

QUICK = os.environ.get("MECHUNLEARN_NOTEBOOK_QUICK") == "1"
recipe = BiosTinyRecipe().small() if QUICK else BiosTinyRecipe()
model = load_model("bios-tiny", recipe=recipe)
world = World(recipe.world)
model

# %% [markdown]
# ## One person: ground truth vs. the model's greedy answers

# %%
import pandas as pd

person = world.people[0]
rows = []
for attribute in world.ATTRIBUTES:
    for paraphrase in ("trained", "heldout"):
        item = world.questions(person.name, attribute, paraphrase)[0]
        answer = model.generate(item.prompt, max_new_tokens=2)
        rows.append({"attribute": attribute, "templates": paraphrase, "question": item.prompt, "truth": item.answer, "model": answer.strip()})
facts = pd.DataFrame(rows)
facts

# %%
assert (facts["model"].str.split().str[0] == facts["truth"]).mean() >= 0.8, "the model should know this person"

# %% [markdown]
# A person who does not exist gets `unknown`:

# %%
ghost = world.unknown_items()[0]
ghost.prompt, model.generate(ghost.prompt, max_new_tokens=1)

# %% [markdown]
# ## Behaviour on the 10% forget split (nothing unlearned yet)

# %%
target = world.target(forget_frac=0.1, paraphrase="trained")
before = behavior(model, target)
before.summary(("split", "metric"))

# %% [markdown]
# ## Cache activations at a few sites
# Only the requested hook sites are kept.

# %%
item = target.forget[0]
tokens = model.tokenize([item.prompt]).tokens
sites = ["blocks.0.hook_resid_post", f"blocks.{model.n_layers - 1}.hook_resid_post", "blocks.1.mlp.hook_post"]
logits, cache = model.run_with_cache(tokens, sites)
{name: tuple(act.shape) for name, act in cache.items()}

# %% [markdown]
# ## Apply and revert one weight edit
# Zero the MLP value vectors of the last layer that push the answer token hardest, and watch the
# answer's probability drop; the revert is bitwise exact.

# %%
layer = model.n_layers - 1
answer_id = model.encode(" " + item.answer)[0]
w_out = model.weight(f"blocks.{layer}.mlp.W_out")                      # [d_mlp, d_model]
direct = w_out @ model.weight("unembed.W_U")[:, answer_id]             # each value vector's push on the answer
top = direct.topk(32).indices.tolist()
edits = [WeightEdit(Site("param", f"blocks.{layer}.mlp.W_out", (i,)), "zero") for i in top]
edit = edits[0]
for e in edits[1:]:
    edit = edit + e

def answer_prob():
    with torch.no_grad():
        return torch.softmax(model(tokens)[0, -1], -1)[answer_id].item()

weights_before = model.weights_hash()
p_before = answer_prob()
with edit.applied(model):
    p_edited = answer_prob()
p_after = answer_prob()
print(f"p(answer): before {p_before:.3f}, edited {p_edited:.3f}, reverted {p_after:.3f}")
assert p_edited < p_before and p_after == p_before
assert model.weights_hash() == weights_before
