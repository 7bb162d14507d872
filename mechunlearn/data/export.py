"""`export_tofu`: a target written in TOFU's layout, so the file loaders (and open-unlearning)
read the built-in world like any user's data.

One file per split (``forget.json``, ``retain.json``, ``holdout.json``; one JSON object a line,
as TOFU's files on the Hugging Face hub are), one record per trained question: ``question``,
``answer``, ``paraphrased_answer`` (a string when there is one, else the list), ``perturbed_answer``
(a list) and ``paraphrased_question`` (a held-out wording of the same fact, paired in order),
plus ``subject``, ``attribute`` and ``context``, which TOFU's readers ignore and ours keep.
`load_target` on the folder gives back the same items (up to their template ids).
"""

from __future__ import annotations

import json
from pathlib import Path

from mechunlearn.core.result import atomic_write_text
from mechunlearn.data.target import SPLITS, Item, Target


def _fact(it: Item) -> tuple:
    return (it.subject, it.attribute) if it.subject and it.attribute else (it.prompt, it.answer)


def tofu_records(items: tuple[Item, ...], *, per_fact: int | None = None) -> list[dict]:
    """TOFU-layout records of one split (module doc); ``per_fact`` keeps the first ``per_fact``
    trained questions of each fact (each with its paired held-out question)."""
    trained: dict[tuple, list[Item]] = {}
    heldout: dict[tuple, list[Item]] = {}
    for it in items:
        if it.choices:
            raise ValueError("multiple-choice items have no TOFU layout; keep them in their question/choices/answer file")
        (trained if it.paraphrase == "trained" else heldout).setdefault(_fact(it), []).append(it)
    for key, extra in heldout.items():
        if len(extra) > len(trained.get(key, ())):
            raise ValueError(f"fact {key} has {len(extra)} held-out questions but {len(trained.get(key, ()))} trained ones: TOFU's layout pairs each held-out question with a trained one")
    out = []
    for key, asked in trained.items():
        for j, it in enumerate(asked[:per_fact]):
            record = {"question": it.prompt, "answer": it.answer}
            if it.paraphrased_answers:
                record["paraphrased_answer"] = it.paraphrased_answers[0] if len(it.paraphrased_answers) == 1 else list(it.paraphrased_answers)
            if it.perturbed_answers:
                record["perturbed_answer"] = list(it.perturbed_answers)
            if j < len(heldout.get(key, ())):
                record["paraphrased_question"] = heldout[key][j].prompt
            record.update({k: getattr(it, k) for k in ("subject", "attribute", "context") if getattr(it, k)})
            out.append(record)
    return out


def export_tofu(target: Target, folder: str | Path, *, per_fact: int | None = None) -> Path:
    """Write ``target``'s forget / retain (/ holdout) items in TOFU's layout into ``folder``
    (each file atomically); returns the folder. ``per_fact`` limits the trained questions per
    fact (smaller files; the loaded target then has only those)."""
    if target.kind != "qa":
        raise ValueError(f"target {target.name!r} is a {target.kind} target: only question/answer items have a TOFU layout")
    if per_fact is not None and per_fact < 1:
        raise ValueError(f"per_fact must be >= 1 (or None for all), got {per_fact}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        items = target.split(split)
        if items:
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in tofu_records(items, per_fact=per_fact))
            atomic_write_text(folder / f"{split}.json", text)
    return folder
