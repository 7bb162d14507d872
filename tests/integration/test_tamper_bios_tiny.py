"""The tamper suite on bios-tiny's shipped weights (small recipe) and its retain model: ceilings,
quantization undoing an edit that stays inside the int4 grid, Leak@k, retain-only fine-tuning."""

from __future__ import annotations

import pytest
import torch

from mechunlearn.models.bios_tiny import BiosTinyRecipe
from mechunlearn.models.text import answer_nll, encode_qa
from mechunlearn.verify.attacks import AttackConfig, attack_suite, leak_attack, quantization_attack, retain_finetune_attack
from mechunlearn.verify.behavior import score_items
from mechunlearn.world import World

pytestmark = pytest.mark.slow

RECIPE = BiosTinyRecipe().small()


@pytest.fixture(scope="module")
def target():
    return World(RECIPE.world).target(0.1, paraphrase="trained")


def _values(rows, attack, metric="attack_exact_match", split="forget"):
    return [r["value"] for r in rows if r["attack"] == attack and r["metric"] == metric and r["split"] == split]


def test_few_shot_is_marked_not_applicable_where_the_unedited_model_fails_it(small_bios_tiny, target):
    model, retain = small_bios_tiny
    frame = attack_suite({"original": model, "retain": retain}, target, AttackConfig(max_items=120, quant_bits=(8,)), attacks=["few_shot", "quantize"]).frame
    forget = frame[(frame["split"] == "forget") & (frame["metric"] == "attack_exact_match")]
    few = forget[forget["attack"] == "few_shot"]
    # bios-tiny answers from whatever fact precedes the question: solved examples derail it
    assert (few["ceiling"] < 0.5).all() and not few["applicable"].any()
    assert few["reason"].str.contains("not applicable").all()
    int8 = forget[forget["attack"] == "quantize_int8"]
    assert int8["applicable"].all() and (int8["ceiling"] >= 0.95).all()
    assert (int8["oracle"] <= 0.1).all()  # the retain model, beside every row


@pytest.fixture(scope="module")
def grid_edit(small_bios_tiny, target):
    """Weights moved, each within its own int4 cell, in the direction that raises the forget NLL:
    the largest weight of every row is kept, so int4 rounds the edit back to the original's grid."""
    model, _ = small_bios_tiny
    names = model.weight_names("matrices")
    params = [model.weight_spec(n).param for n in names]
    forget = list(target.forget)
    for p in params:
        p.requires_grad_(True)
    answer_nll(model, encode_qa(model, [i.prompt for i in forget], [i.answer for i in forget])).mean().backward()
    new = {}
    with torch.no_grad():
        for n, p in zip(names, params):
            top = p.abs().amax(1, keepdim=True)
            step = top / 7
            moved = torch.where(p.grad > 0, ((p / step).round() + 0.08) * step, ((p / step).round() - 0.08) * step)
            new[n] = torch.where(p.abs() >= top, p, moved.clamp(-0.999 * top, 0.999 * top))
            p.requires_grad_(False)
            p.grad = None
    return names, new


def _edited(model, names, new):
    restoring = model.restoring(names)
    restoring.__enter__()
    with torch.no_grad():
        for n in names:
            model.weight_spec(n).param.copy_(new[n])
    return restoring


def test_int4_quantization_undoes_an_edit_inside_its_grid_and_int8_keeps_the_original(small_bios_tiny, target, grid_edit):
    model, _ = small_bios_tiny
    config = AttackConfig(max_items=120)
    before = model.weights_hash()
    original = quantization_attack(model, target, config)
    assert _values(original, "quantize_int8")[0] >= 0.97
    restoring = _edited(model, *grid_edit)
    try:
        plain = score_items(model, list(target.forget), progress=False)["exact_match"].mean()
        edited = quantization_attack(model, target, config)
    finally:
        restoring.__exit__(None, None, None)
    assert model.weights_hash() == before
    assert plain <= 0.2  # mostly forgotten in float (0.15 measured)
    assert _values(edited, "quantize_int4")[0] >= 0.95  # back after int4
    assert _values(edited, "quantize_int4", split="retain")[0] >= 0.9


def test_leak_at_k_finds_answers_greedy_decoding_hides(small_bios_tiny, target, grid_edit):
    model, retain = small_bios_tiny
    config = AttackConfig(leak_max_items=120, leak_k=(1, 4, 16))
    restoring = _edited(model, *grid_edit)
    try:
        rows = leak_attack(model, target, config)
    finally:
        restoring.__exit__(None, None, None)
    leak = {r["k"]: r["value"] for r in rows if r["metric"] == "leak_at_k"}
    greedy = next(r["value"] for r in rows if r["metric"] == "leak_greedy")
    assert leak[1] <= leak[4] <= leak[16], (leak, greedy)
    assert leak[16] >= greedy + 0.1 and leak[16] >= leak[1] + 0.1
    oracle = {r["k"]: r["value"] for r in leak_attack(retain, target, config) if r["metric"] == "leak_at_k"}
    assert oracle[16] <= leak[16] - 0.2


def test_retain_only_fine_tuning_of_the_oracle_creates_no_forget_knowledge(small_bios_tiny, target):
    _, retain = small_bios_tiny
    rows = retain_finetune_attack(retain, target, AttackConfig(max_items=120, retain_ft_steps=10, relearn_eval_every=10))
    steps = sorted({r["step"] for r in rows})
    assert steps == [0, 10]
    assert max(_values(rows, "retain_finetune")) <= 0.1
    assert min(_values(rows, "retain_finetune", split="retain")) >= 0.9
