"""The card on file targets, end to end on the shipped small bios-tiny and its shipped retain
model as the oracle: bios-tiny's world exported in TOFU's layout and read back, a multiple-choice
file about its people, and `mechunlearn eval --data`. Sections the data cannot feed are skipped
with their reason."""

from __future__ import annotations

import random

import pytest

from mechunlearn.core.edit import Compose
from mechunlearn.data import Target, export_tofu, load_target
from mechunlearn.models.bios_tiny import BiosTinyRecipe
from mechunlearn.verify.attacks import AttackConfig
from mechunlearn.verify.card import CardConfig, evaluation_card
from mechunlearn.verify.tofu import TofuConfig
from mechunlearn.world import World, pools

RECIPE = BiosTinyRecipe().small()


@pytest.fixture(scope="module")
def world():
    return World(RECIPE.world)


def _values(frame, metric, split):
    rows = frame[(frame["metric"] == metric) & (frame["split"] == split)]
    return rows.groupby("model")["value"].mean()


def test_card_on_the_world_exported_in_tofu_layout(tmp_path, small_bios_tiny, world):
    model, retain = small_bios_tiny
    export_tofu(world.target(0.1), tmp_path, per_fact=1)
    target = load_target(tmp_path)
    config = CardConfig(sections=("behavior", "choice", "attacks", "tofu"), attack_names=("reintroduce",), tofu=TofuConfig(max_retain_people=8, max_qa_items=48, max_new_tokens=4))
    card = evaluation_card((model, Compose([])), None, retain, target, config)
    f = card.frame
    tofu = f[f["section"] == "tofu"]
    assert set(tofu["protocol"]) == {"tofu"}  # TOFU's layout: TOFU's protocol
    prob = _values(f, "forget_Q_A_Prob", "forget")
    assert prob["original"] > 0.8 and prob["retain"] < 0.2  # the retain model never saw the forget facts
    facts = {(i.subject, i.attribute) for i in target.forget}
    assert set(f[f["metric"] == "forget_truth_ratio"]["n_items"]) == {len(facts)}  # one truth item per fact, from the file
    assert _values(f, "forget_quality", "forget")["retain"] == 1.0
    reintro = f[(f["metric"] == "attack_exact_match") & (f["split"] == "forget") & (f["model"] == "retain")].set_index(["attack", "context"])["value"]
    # the retain model reads the exported context sentences: the employer's city in two hops, the fact itself
    assert reintro["reintroduce_two_hop", True] > reintro["reintroduce_two_hop", False] + 0.5
    assert reintro["reintroduce_direct", True] > reintro["reintroduce_direct", False]
    assert "no multiple-choice items" in card.provenance["skipped"]["choice"]


def _choice_records(world, people, split, seed=0):
    rng = random.Random(seed)
    records = []
    for name in people:
        for attribute in ("birth_city", "employer"):
            question = world.questions(name, attribute)[0]
            wrong = rng.sample([v for v in pools.VALUE_POOLS[attribute] if v != question.answer], 3)
            choices = [question.answer, *wrong]
            rng.shuffle(choices)
            records.append({"split": split, "question": question.prompt, "choices": choices, "answer": choices.index(question.answer)})
    return records


def test_card_on_a_multiple_choice_file(small_bios_tiny, world):
    model, retain = small_bios_tiny
    forget, kept = world.forget_people(0.1), world.retain_people(0.1)[:8]
    target = Target.from_records(_choice_records(world, forget, "forget") + _choice_records(world, kept, "retain"), name="bios-choice")
    config = CardConfig(sections=("choice", "probes", "mia", "tofu", "attacks"), attack_names=("paraphrase", "reintroduce"), attacks=AttackConfig())
    card = evaluation_card((model, Compose([])), None, retain, target, config)
    acc = _values(card.frame, "choice_acc", "forget")
    assert acc["original"] >= 0.85 and acc["retain"] <= acc["original"] - 0.4  # the oracle is near chance (0.25)
    assert _values(card.frame, "choice_acc", "retain")["retain"] >= 0.85
    skipped = card.provenance["skipped"]
    assert set(skipped) == {"probes", "mia", "tofu", "attacks"}
    assert "holdout items" in skipped["mia"] and "subject, attribute columns" in skipped["probes"]


def test_eval_data_on_the_cli(tmp_path, capsys, world):
    from mechunlearn.cli import main

    assert main(["export-tofu", "bios-tiny", str(tmp_path / "tofu"), "--quick", "--per-fact", "1"]) == 0
    assert main(["eval", "bios-tiny", "--quick", "--data", str(tmp_path / "tofu"), "--out", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out
    assert "qa items" in out and (tmp_path / "t.csv").exists()
    assert main(["eval", "bios-tiny", "--quick", "--data", "tests/data/corpus"]) == 2
    assert "text corpus" in capsys.readouterr().err
