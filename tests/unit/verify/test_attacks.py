"""Attack prompts are built as documented; relearning trains with the one loop and restores weights."""

from __future__ import annotations

import pytest
import torch

from mechunlearn.core.edit import DeltaEdit
from mechunlearn.verify.attacks import (
    AttackConfig,
    attack_suite,
    few_shot_items,
    reintroduction_items,
    relearn_halves,
    relearning_attack,
    with_ceilings,
)
from mechunlearn.world.templates import BIO_TEMPLATES


def test_few_shot_prompts_start_with_solved_retain_questions(target):
    items = few_shot_items(target, AttackConfig(few_shot_k=2))
    forget = [it for it in target.forget if it.paraphrase == "trained"]
    assert len(items) == len(forget)
    retain_qa = {f"{it.prompt} {it.answer}": it for it in target.retain}
    for shot_item, original in zip(items, forget):
        assert shot_item.prompt.endswith(original.prompt) and shot_item.answer == original.answer
        context = shot_item.prompt[: -len(original.prompt)].strip()
        solved = [q for q in retain_qa if q in context]
        assert len(solved) == 2 and all(retain_qa[q].attribute == original.attribute for q in solved)


def test_two_hop_reintroduction_states_the_employer_and_asks_the_city(target):
    with_ctx, without = reintroduction_items(target, "two_hop")
    employer = {it.subject: it.answer for it in target.forget if it.attribute == "employer"}
    assert with_ctx and len(with_ctx) == len(without)
    for it, bare in zip(with_ctx, without):
        assert it.attribute == "work_city" and bare.attribute == "work_city"
        stated = BIO_TEMPLATES["employer"][0].format(name=it.subject, value=employer[it.subject])
        assert it.prompt == f"{stated} {bare.prompt}"
    direct, _ = reintroduction_items(target, "direct")
    assert all(it.answer in it.prompt for it in direct)
    with pytest.raises(ValueError, match="kind"):
        reintroduction_items(target, "three_hop")


@pytest.mark.parametrize("split", ["person", "attribute", "item"])
def test_relearn_halves_are_disjoint(target, split):
    a, b = relearn_halves(target, AttackConfig(relearn_split=split))
    key = {"person": lambda it: it.subject, "attribute": lambda it: it.attribute, "item": lambda it: (it.prompt, it.answer)}[split]
    assert {key(i) for i in a}.isdisjoint({key(i) for i in b})
    assert len(a) + len(b) == sum(it.paraphrase == "trained" for it in target.forget)
    assert abs(len({key(i) for i in a}) - len({key(i) for i in b})) <= 1


def test_one_subject_is_halved_by_item_only(target):
    from dataclasses import replace

    one = replace(target, forget=tuple(it for it in target.forget if it.subject == target.forget[0].subject))
    with pytest.raises(ValueError, match="relearn_split='item'"):
        relearn_halves(one, AttackConfig(relearn_split="person"))
    a, b = relearn_halves(one, AttackConfig(relearn_split="item"))
    assert a and b and not set(a) & set(b)


def test_relearning_learns_the_trained_half_and_restores_the_weights(tiny_model, target):
    name = "blocks.0.mlp.W_out"
    edit = DeltaEdit({name: torch.full_like(tiny_model.weight(name), 0.01)}, label="toy")
    before = tiny_model.weights_hash()
    config = AttackConfig(relearn_steps=20, relearn_lr=3e-3, relearn_eval_every=5, relearn_batch_size=8)
    rows = relearning_attack((tiny_model, edit), target, config)
    assert tiny_model.weights_hash() == before
    prob = {(r["half"], r["step"]): r["value"] for r in rows if r["metric"] == "relearn_prob"}
    assert sorted({s for _, s in prob}) == [0, 5, 10, 15, 20]
    assert prob[("trained", 20)] > prob[("trained", 0)] + 0.1


def test_attack_suite_puts_ceiling_and_oracle_beside_each_row_and_judges_applicability(tiny_model, target):
    name = "blocks.0.mlp.W_out"
    edit = DeltaEdit({name: torch.full_like(tiny_model.weight(name), 0.05)}, label="toy")
    before = tiny_model.weights_hash()
    # the tiny model's context is 32 tokens: one shot; two relearning / retain fine-tuning steps
    config = AttackConfig(relearn_steps=2, relearn_eval_every=1, few_shot_k=1, retain_ft_steps=2, leak_k=(1, 2))
    f = attack_suite({"original": tiny_model, "retain": (tiny_model, edit)}, target, config).frame
    assert tiny_model.weights_hash() == before
    names = {"paraphrase", "few_shot", "reintroduce_two_hop", "reintroduce_direct", "relearn", "retain_finetune", "quantize_int8", "quantize_int4", "leak"}
    for role in ("original", "retain"):
        assert set(f.loc[f["model"] == role, "attack"]) == names
    # one concrete row each: the int8-quantized forget probability of both roles
    q = f[(f["attack"] == "quantize_int8") & (f["split"] == "forget") & (f["metric"] == "attack_prob")].set_index("model")
    assert q.loc["retain", "value"] != q.loc["original", "value"]  # the edit changed the model
    for role in ("original", "retain"):
        assert q.loc[role, "ceiling"] == q.loc["original", "value"] and q.loc[role, "oracle"] == q.loc["retain", "value"]
    # a random model knows nothing: under the default min_ceiling (0.5) no attack applies, and
    # each row says why with the unedited model's score; with min_ceiling 0 every attack applies
    assert f["applicable"].eq(False).all()
    level = f[(f["model"] == "original") & (f["attack"] == "few_shot") & (f["metric"] == "attack_exact_match") & (f["split"] == "forget")]["value"].mean()
    few = f.loc[f["attack"] == "few_shot", "reason"]
    assert few.str.contains(f"scores {level:.3f} on forget items under few_shot").all()
    bare = f.drop(columns=["ceiling", "oracle", "applicable", "reason"])
    assert with_ceilings(bare, 0.0)["applicable"].eq(True).all()
    # without the unedited model's rows there is no ceiling, and the rows say so
    alone = with_ceilings(bare[bare["model"] == "retain"], 0.5)
    assert alone["ceiling"].isna().all() and alone["reason"].str.startswith("ceiling unknown").all()
    with pytest.raises(ValueError, match="unknown attacks"):
        attack_suite({"original": tiny_model}, target, attacks=["jailbreak"])


def test_few_shot_examples_of_another_topic_are_an_explicit_choice(target):
    from dataclasses import replace

    other_topic = replace(target, retain=tuple(replace(it, attribute="unrelated") for it in target.retain))
    with pytest.raises(ValueError, match="few_shot_shots='any'"):
        few_shot_items(other_topic, AttackConfig(few_shot_k=1))
    items = few_shot_items(other_topic, AttackConfig(few_shot_k=1, few_shot_shots="any"))
    retain_qa = {f"{it.prompt} {it.answer}" for it in other_topic.retain}
    assert items and all(any(it.prompt.startswith(qa) for qa in retain_qa) for it in items)
