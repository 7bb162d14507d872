"""The file loaders: every layout of `load_target` and every validation error."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from mechunlearn.data import RecordError, Target, load_target

DATA = Path(__file__).resolve().parents[2] / "data"


def write(path: Path, *records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def qa(split: str, prompt: str, answer: str = "a", **extra) -> dict:
    return {"split": split, "prompt": prompt, "answer": answer, **extra}


# --------------------------------------------------------------------------- layouts


def test_qa_table_reads_every_column():
    t = load_target(DATA / "qa.jsonl")
    assert (t.name, t.kind, len(t.holdout)) == ("qa", "qa", 1)
    paris = t.forget[0]
    assert (paris.prompt, paris.answer, paris.subject, paris.attribute) == ("The capital of France is", "Paris", "France", "capital")
    assert paris.paraphrased_answers == ("The capital of France is Paris.",)
    assert paris.perturbed_answers == ("The capital of France is Lyon.", "The capital of France is Nice.")
    assert paris.context == "Paris is the capital of France."
    # the paraphrased question is a held-out-template item with the same answer
    reworded = [it for it in t.forget if it.paraphrase == "heldout"]
    assert [(it.prompt, it.answer) for it in reworded] == [("France's capital city is", "Paris"), ("Japan's capital city is", "Tokyo")]
    assert "protocol" not in t.meta  # a QA table is scored under the project's default protocol
    assert t.has("context") and t.has("perturbed_answers") and not t.has("context", "holdout")


def test_csv_reads_json_list_cells_and_empty_cells():
    t = load_target(DATA / "qa.csv")
    assert [it.answer for it in t.forget] == ["Paris"]
    assert t.forget[0].perturbed_answers == ("Lyon", "Nice")
    assert [it.perturbed_answers for it in t.retain] == [("Milan", "Naples"), ()]


def test_parquet_reads_list_columns(tmp_path):
    records = [json.loads(line) for line in (DATA / "qa.jsonl").read_text().splitlines()]
    pd.DataFrame(records).to_parquet(tmp_path / "qa.parquet")
    assert load_target(tmp_path / "qa.parquet") == load_target(DATA / "qa.jsonl")


def test_tofu_layout_reads_split_files_and_selects_the_tofu_protocol():
    t = load_target(DATA / "tofu")
    assert [len(t.forget), len(t.retain), len(t.holdout)] == [6, 6, 2]  # question + paraphrased question
    first = t.forget[0]
    assert (first.prompt, first.answer) == ("Which city is the capital of France?", "Paris")
    assert first.paraphrased_answers == ("France's capital is Paris.",)
    assert len(first.perturbed_answers) == 3
    assert (t.meta["layout"], t.meta["protocol"]) == ("tofu", "tofu")
    same = load_target(DATA / "tofu" / "forget.json", retain=DATA / "tofu" / "retain.json", holdout=DATA / "tofu" / "holdout.json")
    assert (same.forget, same.retain, same.holdout) == (t.forget, t.retain, t.holdout) and same.meta["protocol"] == "tofu"
    assert load_target(DATA / "tofu", protocol="mechunlearn").meta["protocol"] == "mechunlearn"


def test_tofu_json_array_files(tmp_path):
    (tmp_path / "forget.json").write_text(json.dumps([{"question": "q1 ?", "answer": "a"}]))
    (tmp_path / "retain.json").write_text(json.dumps([{"question": "q2 ?", "answer": "b"}]))
    t = load_target(tmp_path)
    assert [(it.prompt, it.answer) for it in (*t.forget, *t.retain)] == [("q1 ?", "a"), ("q2 ?", "b")]


def test_multiple_choice():
    t = load_target(DATA / "choice.jsonl")
    assert t.kind == "choice"
    first = t.forget[0]
    assert (first.choices, first.answer_index, first.answer) == (("Gold", "Oxygen", "Iron", "Helium"), 1, "Oxygen")
    assert [it.answer_index for it in t.retain] == [0, 3]


def test_corpora_one_file_each_or_a_split_column(tmp_path):
    t = load_target(DATA / "corpus")
    assert t.kind == "corpus" and not t.forget
    assert t.forget_texts == ("Paris is the capital of France. It stands on the river Seine and is known for the Eiffel Tower.", "Tokyo is the capital of Japan and its largest city.")
    assert len(t.retain_texts) == 2
    c = load_target(DATA / "corpus.jsonl")
    assert (c.forget_texts, c.retain_texts, c.holdout_texts) == (("Paris is the capital of France.",), ("Rome is the capital of Italy.",), ("Lutz is the capital of Zubrovia.",))


def test_from_records_matches_the_file():
    records = [json.loads(line) for line in (DATA / "choice.jsonl").read_text().splitlines()]
    assert Target.from_records(records, name="choice") == load_target(DATA / "choice.jsonl")
    with pytest.raises(RecordError, match=r"records: the 'retain' split is empty"):
        Target.from_records([{"question": "q ?", "answer": "a"}], split="forget", name="x")


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "records, line, message",
    [
        ([qa("forget", "q1"), {"split": "retain", "prompt": "q2"}], 2, r"missing column 'answer'"),
        ([qa("forget", "q1"), {"split": "retain", "answer": "b"}], 2, r"missing column 'prompt' \(or 'question'\)"),
        ([qa("forget", "q1"), qa("retian", "q2")], 2, r"unknown split 'retian'; use one of forget, retain, holdout"),
        ([qa("forget", "q1"), {"prompt": "q2", "answer": "b"}], 2, r"missing column 'split'"),
        ([qa("forget", "q1"), qa("retain", "q2"), qa("retain", "q1")], 3, r"same item is in the 'forget' split \(.*:1\) and the 'retain' split"),
        ([qa("forget", "q1"), qa("retain", "q2", colour="red")], 2, r"unknown column\(s\) \['colour'\]"),
        ([qa("forget", "q1"), qa("retain", "q2", perturbed_answers=[1, 2])], 2, r"'perturbed_answers' must be a list of non-empty strings"),
        ([{"split": "forget", "question": "q1", "choices": ["x", "y"], "answer": 0}, {"split": "retain", "question": "q2", "choices": ["x", "y"], "answer": 2}], 2, r"choice index 2 out of range for 2 choices; use 0..1"),
        ([{"split": "forget", "question": "q2", "choices": ["x", "y"], "answer": "y"}], 1, r"must be the right choice's index"),
        ([{"split": "forget", "question": "q2", "choices": ["x"], "answer": 0}], 1, r"at least 2 non-empty strings"),
        ([qa("forget", "q1"), {"split": "retain", "text": "t"}], 2, r"a corpus record among qa records"),
        ([qa("forget", "q1"), {"split": "retain", "title": "t"}], 2, r"cannot tell what this record is"),
    ],
)
def test_bad_records_name_the_file_line_and_fix(tmp_path, records, line, message):
    path = write(tmp_path / "bad.jsonl", *records)
    with pytest.raises(RecordError, match=rf"{tmp_path / 'bad.jsonl'}:{line}: .*{message}"):
        load_target(path)


@pytest.mark.parametrize("missing", ["forget", "retain"])
def test_empty_split_is_an_error(tmp_path, missing):
    keep = "retain" if missing == "forget" else "forget"
    path = write(tmp_path / "one.jsonl", qa(keep, "q1"), qa("holdout", "q2"))
    with pytest.raises(RecordError, match=rf"the '{missing}' split is empty; add {missing} records"):
        load_target(path)


def test_empty_split_file_is_an_error(tmp_path):
    write(tmp_path / "forget.jsonl", {"question": "q ?", "answer": "a"})
    write(tmp_path / "retain.jsonl", {"question": "r ?", "answer": "b"})
    (tmp_path / "holdout.jsonl").write_text("\n")
    with pytest.raises(RecordError, match=r"holdout.jsonl: no records in the holdout file"):
        load_target(tmp_path)


def test_csv_errors_name_the_line_after_the_header(tmp_path):
    (tmp_path / "bad.csv").write_text("split,question,choices,answer\nforget,q1,\"[\"\"x\"\", \"\"y\"\"]\",0\nretain,q2,\"[\"\"x\"\", \"\"y\"\"]\",5\n")
    with pytest.raises(RecordError, match=r"bad.csv:3: choice index 5 out of range"):
        load_target(tmp_path / "bad.csv")


def test_folder_and_file_errors(tmp_path):
    write(tmp_path / "forget.jsonl", {"question": "q ?", "answer": "a"})
    with pytest.raises(RecordError, match="no retain file"):
        load_target(tmp_path)
    with pytest.raises(FileNotFoundError, match="no data file"):
        load_target(tmp_path / "nothing.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"split": "forget", "prompt": "q", "answer": "a"}\n{oops\n')
    with pytest.raises(RecordError, match=r"bad.jsonl:2: not valid JSON"):
        load_target(tmp_path / "bad.jsonl")
    (tmp_path / "x.xlsx").write_text("")
    with pytest.raises(RecordError, match=r"cannot read '.xlsx' files"):
        load_target(tmp_path / "x.xlsx")


# --------------------------------------------------------------------------- export


def _facts(items):
    return sorted((i.prompt, i.answer, i.subject, i.attribute, i.paraphrase, i.paraphrased_answers, i.perturbed_answers, i.context) for i in items)


def test_world_exported_in_tofu_layout_loads_back_the_same_items(tmp_path):
    from mechunlearn.data import export_tofu
    from mechunlearn.world import World, WorldConfig

    world = World(WorldConfig(n_people=20, n_holdout=4, n_nonexistent=4))
    target = world.target(0.1)
    export_tofu(target, tmp_path / "tofu")
    first = json.loads((tmp_path / "tofu" / "forget.json").read_text().splitlines()[0])
    assert {"question", "answer", "paraphrased_answer", "perturbed_answer", "paraphrased_question"} <= set(first)
    back = load_target(tmp_path / "tofu")
    assert back.meta["protocol"] == "tofu"
    for split in ("forget", "retain", "holdout"):
        assert _facts(back.split(split)) == _facts(target.split(split))
    export_tofu(target, tmp_path / "small", per_fact=1)
    small = load_target(tmp_path / "small")
    assert len(small.forget) == 2 * len({(i.subject, i.attribute) for i in target.forget})  # one trained, one held-out question per fact


def test_export_refuses_what_tofu_cannot_hold(tmp_path):
    from mechunlearn.data import export_tofu

    with pytest.raises(ValueError, match="only question/answer items have a TOFU layout"):
        export_tofu(load_target(DATA / "choice.jsonl"), tmp_path)


def test_shipped_bios_tiny_export_is_the_small_worlds():
    from mechunlearn.data import export_tofu  # noqa: F401 (the file was written by `mechunlearn export-tofu bios-tiny ... --quick --per-fact 1`)
    from mechunlearn.models.bios_tiny import BiosTinyRecipe
    from mechunlearn.world import World

    shipped = load_target(DATA / "bios_tiny_tofu")
    world = World(BiosTinyRecipe().small().world).target(0.1)
    first: dict = {}
    for i in world.forget:
        if i.paraphrase == "trained":
            first.setdefault((i.subject, i.attribute), i)
    assert {(i.prompt, i.answer) for i in shipped.forget if i.paraphrase == "trained"} == {(i.prompt, i.answer) for i in first.values()}
    assert shipped.meta["protocol"] == "tofu" and len(shipped.holdout) == 2 * len({(i.subject, i.attribute) for i in world.holdout})
