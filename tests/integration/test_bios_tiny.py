"""bios-tiny: the shipped reference weights (hash, gates, provenance) and the build recipe, whose
gate code is exercised end to end on a tiny world (the same code as the full build)."""

from dataclasses import replace

import pandas as pd
import pytest
import torch

from mechunlearn.models import bios_tiny, load_model
from mechunlearn.world import World

pytestmark = pytest.mark.slow

FULL = bios_tiny.BiosTinyRecipe()
SMALL = FULL.small()
SHIPPED = [(FULL, None), (FULL, 0.1), (FULL, 0.05), (FULL, 0.01), (SMALL, None), (SMALL, 0.1)]


def tiny_recipe(**train) -> bios_tiny.BiosTinyRecipe:
    """A 12-person world and a 2-layer, d_model 128 model: builds in about 15 s, through the same
    build and gate code as the full recipe, with gates set for what so small a model reaches
    (trained 0.94, held-out 0.94, unknown 1.00 here)."""
    world = replace(FULL.world, n_people=12, n_holdout=2, n_nonexistent=12, unknown_qa_per_fact=3, context_qa_per_fact=1)
    return replace(FULL, world=world, d_model=128, n_heads=4, d_mlp=512, n_layers=2, batch_size=32,
                   gate_trained=0.9, gate_heldout=0.8, gate_unknown=0.9,
                   train=replace(FULL.train, **{"steps": 400, "lr": 3e-3, "autocast": "float32", **train}))


@pytest.mark.parametrize("recipe, retain_for", SHIPPED, ids=lambda v: "small" if v == SMALL else "full" if v == FULL else str(v))
def test_every_shipped_reference_loads_with_its_recorded_hash_and_gates(recipe, retain_for):
    folder = bios_tiny.reference_dir(recipe, retain_for)
    assert folder is not None, "no shipped reference for this recipe: regenerate with build-model --write-reference"
    model = load_model("bios-tiny", recipe=recipe, retain_for=retain_for)
    assert model.meta["source"] == "shipped reference"
    assert model.weights_hash() == bios_tiny.reference_hash(recipe, retain_for)
    provenance = pd.read_json(folder / "provenance.json", typ="series")
    assert provenance["recipe_key"] == bios_tiny.recipe_key(recipe, retain_for) and provenance["git_dirty"] is False
    gates = bios_tiny.gates_of(recipe, retain_for=retain_for)
    assert gates.dropna(subset=["gate_min"])["passed"].all()


def test_the_shipped_weights_are_the_concept_files():
    import json

    from mechunlearn.world.concepts import concept_file

    recorded = json.loads(concept_file("bios-tiny").read_text())["weights_hash"]
    assert bios_tiny.reference_hash(FULL) == recorded


@pytest.mark.parametrize("recipe, retain_for", [(FULL, None), (SMALL, None), (SMALL, 0.1)], ids=["full", "small", "small-retain10"])
def test_the_shipped_gate_table_is_what_the_gate_code_computes(recipe, retain_for):
    model = load_model("bios-tiny", recipe=recipe, retain_for=retain_for)
    world = World(recipe.world)
    exclude = set(world.forget_people(retain_for)) if retain_for is not None else set()
    computed = bios_tiny.gate_table(model, world, people=[p.name for p in world.people if p.name not in exclude])
    shipped = bios_tiny.gates_of(recipe, retain_for=retain_for).set_index("gate")
    for row in computed.itertuples():
        assert row.exact_match == pytest.approx(shipped.loc[row.gate, "exact_match"], abs=1e-9), row.gate
        assert row.n_items == shipped.loc[row.gate, "n_items"], row.gate


def test_a_build_passes_its_gates_is_saved_and_reloads_the_same_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("MECHUNLEARN_HOME", str(tmp_path))  # an empty cache: the build must run
    recipe = tiny_recipe()
    model = bios_tiny.load(recipe)  # not shipped: trained, gated and cached
    assert model.meta["source"] == "new build" and model.meta["precision"]["autocast"] == "float32"
    gates = bios_tiny.gates_of(recipe)
    assert gates.dropna(subset=["gate_min"])["passed"].all()
    again = bios_tiny.load(recipe)
    assert again.meta["source"] == "local build"
    assert again.weights_hash() == model.weights_hash() == model.meta["weights_hash"]
    item = World(recipe.world).target(0.1, paraphrase="trained").retain[0]
    tokens = again.tokenize([item.prompt]).tokens
    with torch.no_grad():
        assert torch.equal(again(tokens), model(tokens))
    with pytest.raises(FileNotFoundError, match="no shipped reference"):
        bios_tiny.load(recipe, source="reference")


def test_a_build_that_misses_its_gates_is_not_saved(monkeypatch, tmp_path):
    monkeypatch.setenv("MECHUNLEARN_HOME", str(tmp_path))
    weak = tiny_recipe(steps=3, lr=1e-4, warmup=0)
    with pytest.raises(bios_tiny.GateError, match="not saved") as err:
        bios_tiny.build(weak)
    assert not err.value.gates["passed"].dropna().all()
    assert bios_tiny._weights_file(bios_tiny._cache_dir(weak, None)) is None


def test_a_damaged_weight_file_is_refused(tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "bios-tiny-small"
    shutil.copytree(bios_tiny.reference_dir(SMALL), folder)
    state = load_file(str(folder / "weights.safetensors"))
    state["blocks.0.mlp.W_out"][0, 0] += 1.0
    save_file(state, str(folder / "weights.safetensors"))
    with pytest.raises(RuntimeError, match="damaged or was replaced"):
        bios_tiny._read(folder, SMALL, None, "test", None, None)


def test_the_retain_model_never_saw_the_forget_people():
    from mechunlearn.verify.behavior import score_items

    world = World(SMALL.world)
    forget = world.target(0.1, paraphrase="trained").forget
    on_base = score_items(load_model("bios-tiny", recipe=SMALL), forget, progress=False)["exact_match"].mean()
    on_retain = score_items(load_model("bios-tiny", recipe=SMALL, retain_for=0.1), forget, progress=False)["exact_match"].mean()
    assert on_base >= 0.95
    # the retain model can only guess (few values per attribute), never recall
    assert on_retain < 0.5
