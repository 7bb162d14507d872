"""Causal tracing and attribution patching on a tiny model with a planted fact-lookup layer: the
restoration effect peaks where the fact is looked up, attribution patching agrees with it, and
both work as localizers."""

import pytest
import torch
from scipy.stats import spearmanr

from mechunlearn.core.registry import from_dict
from mechunlearn.locate.registry import LOCALIZERS
from mechunlearn.locate.tracing import (
    AttributionPatching,
    CausalTracing,
    attribution_patch,
    causal_trace,
    layer_scores,
    mean_ablation,
)
from mechunlearn.models.activations import capture
from mechunlearn.world.target import Item, Target
from tests.unit.locate.conftest import planted_lookup
from tests.unit.verify.conftest import toy_target

PLANTED = 2
CITIES = ("w30", "w31", "w32")


@pytest.fixture(scope="module")
def model():
    from tests.conftest import make_tiny_model

    return make_tiny_model(seed=5, n_layers=4)


def subject_last_items():
    """Prompts that end with the person's name, so a lookup at the name is read out directly."""
    people = [f"w{2 * i} w{2 * i + 1}" for i in range(12)]
    return [Item(t.format(name=n), CITIES[i % 3], n, "birth_city") for i, n in enumerate(people) for t in ("where was born {name}", "the city of {name}")]


@pytest.fixture(scope="module")
def traced(model):
    items = subject_last_items()
    with planted_lookup(model, items, PLANTED, directions="unembed").applied(model):
        return causal_trace(model, items, samples=2, progress=False), attribution_patch(model, items, samples=2, progress=False)


def test_restoration_effect_peaks_at_the_planted_layer(traced, model):
    trace, _ = traced
    assert set(trace.columns) >= {"method", "component", "layer", "position", "value", "p_clean", "p_corrupt", "n_items"}
    p_clean, p_corrupt = trace["p_clean"].iloc[0], trace["p_corrupt"].iloc[0]
    assert p_clean > 0.4 and p_corrupt < 0.1  # the noise hides the person, so the lookup fails
    total = p_clean - p_corrupt
    mlp = layer_scores(trace, component="mlp", position="subject_last")
    assert mlp.idxmax() == PLANTED and mlp[PLANTED] > 0.8 * total
    assert mlp.drop(PLANTED).abs().max() < 0.1 * total
    resid = layer_scores(trace, component="resid", position="subject_last")
    assert resid[:PLANTED - 1].abs().max() < 0.1 * total and resid[PLANTED:].min() > 0.8 * total
    # restoring the last layer's residual at the last token restores the clean logits exactly
    assert resid[model.n_layers - 1] == pytest.approx(total, abs=1e-5)
    assert layer_scores(trace, component="attn").abs().max() < 0.1 * total


def test_attribution_patching_agrees_with_causal_tracing(traced):
    trace, patch = traced
    assert patch["p_clean"].iloc[0] == pytest.approx(trace["p_clean"].iloc[0])
    assert patch["p_corrupt"].iloc[0] == pytest.approx(trace["p_corrupt"].iloc[0], abs=1e-6)  # the same noise
    cells = trace.merge(patch, on=["component", "layer", "position"], suffixes=("_trace", "_patch"))
    assert len(cells) == len(trace) == len(patch)
    assert spearmanr(cells["value_trace"], cells["value_patch"]).statistic > 0.8
    for component in ("mlp", "resid"):
        per_layer = layer_scores(patch, component=component)
        assert per_layer.idxmax() == PLANTED or component == "resid"
        assert spearmanr(per_layer, layer_scores(trace, component=component)).statistic > 0.7


def test_localizers_rank_the_planted_mlp_first(model):
    items = subject_last_items()
    target = Target("planted", forget=tuple(items), retain=tuple(items[:2]))
    tracing = from_dict(LOCALIZERS, {"name": "causal_tracing", "samples": 1, "components": ["mlp", "attn"]})
    assert isinstance(tracing, CausalTracing) and tracing.components == ("mlp", "attn")
    with planted_lookup(model, items, PLANTED, directions="unembed").applied(model):
        by_tracing = tracing.locate(model, target, progress=False)
        patching = AttributionPatching(samples=1, max_items=10)
        by_patching = patching.locate(model, target, progress=False)
        assert patching.top_layers(model, target, 1, progress=False) == [PLANTED]
    assert len(by_tracing) == 2 * model.n_layers
    for sel in (by_tracing, by_patching):
        best = sel[0]
        assert best.site.name == f"blocks.{PLANTED}.mlp.W_out" and best.component == "mlp" and best.position == "subject_last"
        assert sel.where(component="attn")[0].site.module == "attn"
    assert by_patching.meta["localizer"] == "attribution_patching" and len(patching.items(target)) == 10
    assert "blocks.0.attn.W_O" in by_tracing


def test_token_roles_and_clear_errors(model):
    items = [it for it in toy_target().forget if it.prompt.startswith("where was")][:4]  # "where was w0 w1 born ?"
    table = causal_trace(model, items, components=["attn"], samples=1, progress=False)
    assert list(table["position"].cat.remove_unused_categories().cat.categories) == ["subject_first", "subject_last", "further", "last"]
    assert (table["n_items"] == 4).all() and sorted(table["layer"].unique()) == list(range(model.n_layers))
    with pytest.raises(ValueError, match="does not occur"):
        causal_trace(model, [Item("where was w0 born ?", "w30", "w9 w8")], progress=False)
    with pytest.raises(ValueError, match="components"):
        attribution_patch(model, items, components=["head"], progress=False)
    with pytest.raises(ValueError, match="position"):
        CausalTracing(position="middle")
    with pytest.raises(ValueError, match="no rows for component"):
        layer_scores(table, component="mlp")


def test_mean_ablation_replaces_activations_by_their_mean(model):
    prompts = ["where was w0 w1 born ?", "who employs w2 w3 ?"]
    tokens = model.to_tokens(prompts)
    site = "blocks.1.hook_attn_out"
    real = tokens != model.pad_token_id
    before = capture(model, tokens, [site])[site]
    with mean_ablation(model, prompts, [site]).applied(model):
        after = capture(model, tokens, [site])[site]
    mean = before[real].mean(0)
    assert torch.allclose(after, mean.expand_as(after), atol=1e-5) and not torch.allclose(before, after)
    assert model.hook_count() == 0
