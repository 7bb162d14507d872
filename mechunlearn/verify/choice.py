"""Multiple-choice accuracy (WMDP / MMLU layout), scored as lm-eval-harness scores it.

Each choice is a continuation of the question (``"{question} {choice}"``); its score is the
summed log-probability of the choice's tokens. ``choice_acc`` is the share of questions whose
right choice scores highest (lm-eval-harness's ``acc``), ``choice_acc_norm`` the same with each
score divided by the choice's length in bytes (its ``acc_norm``). ``chance`` is the mean of
1 / number of choices: an unlearned model should fall to it on the forget split and stay above
it on the retain split.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import pandas as pd

from mechunlearn.core.result import Result, provenance
from mechunlearn.models.activations import model_of, using
from mechunlearn.verify.behavior import score_items
from mechunlearn.world.target import SPLITS, Item

if TYPE_CHECKING:
    from mechunlearn.models.model import Model
    from mechunlearn.world.target import Target


def choice_logprobs(model: "Model", items: Sequence[Item], *, batch_size: int = 64) -> list[np.ndarray]:
    """The summed log-probability of every choice of every item after its question."""
    bad = [it.prompt for it in items if not it.choices]
    if bad:
        raise ValueError(f"items without choices (not multiple-choice questions): {bad[:3]}")
    flat = [Item(it.prompt, c) for it in items for c in it.choices]
    logp = score_items(model, flat, batch_size=batch_size, progress=False)["answer_logprob"].to_numpy()
    out, at = [], 0
    for it in items:
        out.append(logp[at : at + len(it.choices)])
        at += len(it.choices)
    return out


def choice_accuracy(models: Mapping[str, object], target: "Target", *, batch_size: int = 64, method: str = "none", run_id: str | None = None) -> Result:
    """``choice_acc``, ``choice_acc_norm`` and ``chance`` per split for each model role (`Model`
    or ``(Model, Edit)`` pair)."""
    if target.kind != "choice":
        raise ValueError(f"target {target.name!r} has no multiple-choice items (give question, choices and answer index records)")
    rows = []
    for role, subject in models.items():
        with using(subject) as m:
            for split in SPLITS:
                items = target.split(split)
                if not items:
                    continue
                scores = choice_logprobs(m, items, batch_size=batch_size)
                right = np.array([it.answer_index for it in items])
                acc = np.array([s.argmax() for s in scores]) == right
                lengths = [np.array([len(c.encode("utf-8")) for c in it.choices]) for it in items]
                acc_norm = np.array([(s / n).argmax() for s, n in zip(scores, lengths)]) == right
                chance = float(np.mean([1 / len(it.choices) for it in items]))
                for metric, value in (("choice_acc", acc.mean()), ("choice_acc_norm", acc_norm.mean()), ("chance", chance)):
                    rows.append({"model": role, "metric": metric, "split": split, "value": float(value), "n_items": len(items)})
    frame = pd.DataFrame(rows)
    frame["method"], frame["run_id"] = method, run_id
    return Result(frame, provenance(model_of(next(iter(models.values()))).model_id, None, target=target.name, models=list(models)))
