"""TOFU-style metrics (Maini et al. 2024), named as open-unlearning names them.

For a question q with paraphrased (true) answers ã and perturbed (false) answers â, with the
length-normalised probability P(a|q)^(1/|a|) (`score_items`' ``answer_prob_norm``):

    R_truth = mean_â P(â|q)^(1/|â|)  /  mean_ã P(ã|q)^(1/|ã|)

(TOFU has one paraphrased answer; our world has several, so their normalised probabilities
are averaged too.) A model that knows the fact has R ≪ 1; one that never saw it has R ≈ 1.

| metric               | definition                                                                 |
| -------------------- | -------------------------------------------------------------------------- |
| ``forget_truth_ratio`` | mean over forget items of min(R, 1/R) (TOFU's forget-set reporting: 1 is best) |
| ``retain_truth_ratio`` | mean over retain items of max(0, 1 − R) (TOFU's retain-set reporting)     |
| ``forget_quality``   | p-value of the two-sample KS test between the model's and the retain model's R on forget items |
| ``model_utility``    | harmonic mean of the retain-side scores: answer probability, exact match (our ROUGE stand-in: answers are one word) and retain truth ratio |

The retain model's forget quality against itself is 1 by definition; the original model's is
typically tiny. Truth items (question + paraphrased + perturbed answers) come from the `World`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

from mechunlearn.core.memo import by_weights
from mechunlearn.core.result import Result, provenance
from mechunlearn.models.activations import model_of, using
from mechunlearn.verify.behavior import score_items
from mechunlearn.world.target import Item

if TYPE_CHECKING:
    from mechunlearn.world.target import Target
    from mechunlearn.world.world import World

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TruthItem:
    """One question with its true answers in new wordings and its false answers."""

    prompt: str
    """The question (ends with the answer cue)."""
    paraphrased: tuple[str, ...]
    """True answers in wordings never trained on."""
    perturbed: tuple[str, ...]
    """False answers (wrong values) in the first paraphrase's wording."""
    subject: str = ""
    """The person asked about."""
    attribute: str = ""
    """The attribute asked for."""


def truth_items(world: "World", items: Sequence[Item], *, template: int = 0) -> list[TruthItem]:
    """One `TruthItem` per (subject, attribute) among ``items``, asked with the ``template``-th
    trained question template of the attribute."""
    pairs = list(dict.fromkeys((it.subject, it.attribute) for it in items if it.subject and it.attribute))
    if not pairs:
        raise ValueError("no (subject, attribute) items to build truth-ratio questions from")
    out = []
    for name, attribute in pairs:
        questions = world.questions(name, attribute, "trained")
        if not 0 <= template < len(questions):
            raise ValueError(f"template {template} out of range: {attribute} has {len(questions)} trained templates")
        out.append(
            TruthItem(
                prompt=questions[template].prompt,
                paraphrased=tuple(world.paraphrased_answers(name, attribute)),
                perturbed=tuple(world.perturbed_answers(name, attribute)),
                subject=name,
                attribute=attribute,
            )
        )
    return out


def truth_ratio_from_probs(paraphrased: Sequence[float], perturbed: Sequence[float]) -> float:
    """R = mean(perturbed normalised probs) / mean(paraphrased normalised probs)."""
    if len(paraphrased) == 0 or len(perturbed) == 0:
        raise ValueError("a truth ratio needs at least one paraphrased and one perturbed answer")
    denominator = float(np.mean(paraphrased))
    if denominator <= 0:
        return float("inf")
    return float(np.mean(perturbed)) / denominator


@by_weights
def truth_ratios(model, items: Sequence[TruthItem], *, batch_size: int = 64) -> np.ndarray:
    """R_truth of every item under ``model`` (a `Model` or ``(Model, Edit)`` pair)."""
    if not items:
        raise ValueError("no truth items")
    flat = [Item(t.prompt, a) for t in items for a in (*t.paraphrased, *t.perturbed)]
    with using(model) as m:
        probs = score_items(m, flat, batch_size=batch_size, progress=False)["answer_prob_norm"].to_numpy()
    out, at = [], 0
    for t in items:
        n_para, n_pert = len(t.paraphrased), len(t.perturbed)
        out.append(truth_ratio_from_probs(probs[at : at + n_para], probs[at + n_para : at + n_para + n_pert]))
        at += n_para + n_pert
    return np.asarray(out)


def forget_truth_ratio(ratios: Sequence[float]) -> float:
    """TOFU's forget-set truth ratio: mean of min(R, 1/R)."""
    r = np.asarray(ratios, dtype=float)
    return float(np.mean(np.minimum(r, 1.0 / r)))


def retain_truth_ratio(ratios: Sequence[float]) -> float:
    """TOFU's retain-set truth ratio: mean of max(0, 1 − R)."""
    r = np.asarray(ratios, dtype=float)
    return float(np.mean(np.maximum(0.0, 1.0 - r)))


def forget_quality(ratios: Sequence[float], retain_ratios: Sequence[float]) -> float:
    """p-value of the two-sample KS test between two truth-ratio samples (TOFU's forget quality)."""
    a, b = np.asarray(ratios, dtype=float), np.asarray(retain_ratios, dtype=float)
    if a.size == 0 or b.size == 0:
        raise ValueError("forget quality needs truth ratios from both models")
    return float(ks_2samp(a, b).pvalue)


def harmonic_mean(values: Sequence[float]) -> float:
    """Harmonic mean; 0 if any value is 0 (as TOFU's model utility)."""
    v = np.asarray(values, dtype=float)
    if v.size == 0 or (v < 0).any():
        raise ValueError(f"harmonic mean needs non-negative values, got {list(v)}")
    if (v == 0).any():
        return 0.0
    return float(v.size / np.sum(1.0 / v))


@dataclass(frozen=True)
class TofuConfig:
    """TOFU-style metric settings."""

    template: int = 0
    """Which trained question template asks the truth-ratio questions."""
    max_retain_people: int | None = 40
    """Retain people used for the retain-side truth ratio (seeded subset; None: all)."""
    max_retain_items: int | None = 1000
    """Retain QA items scored for model utility's probability and exact match (None: all)."""
    batch_size: int = 64
    """Sequences per forward pass."""
    seed: int = 0
    """Seed of the subsets."""


def _sample(values: list, limit: int | None, seed: int) -> list:
    if limit is None or len(values) <= limit:
        return values
    keep = np.sort(np.random.default_rng(seed).choice(len(values), limit, replace=False))
    return [values[i] for i in keep]


def tofu_metrics(
    models: Mapping[str, object],
    target: "Target",
    world: "World",
    config: TofuConfig = TofuConfig(),
    *,
    retain_role: str | None = "retain",
    keep_ratios: bool = False,
    method: str = "none",
    run_id: str | None = None,
) -> Result:
    """``forget_truth_ratio``, ``retain_truth_ratio``, ``model_utility`` (and its parts) for each
    model role; ``forget_quality`` of each role against ``retain_role``. With ``keep_ratios``,
    per-item R values are included as ``metric="truth_ratio"`` rows."""
    forget_items = truth_items(world, target.forget, template=config.template)
    people = _sample(sorted({it.subject for it in target.retain}), config.max_retain_people, config.seed)
    keep = set(people)
    retain_truth = truth_items(world, [it for it in target.retain if it.subject in keep], template=config.template)
    retain_qa = _sample(list(target.retain), config.max_retain_items, config.seed)
    rows: list[dict] = []
    forget_r: dict[str, np.ndarray] = {}
    for role, subject in models.items():
        forget_r[role] = truth_ratios(subject, forget_items, batch_size=config.batch_size)
        retain_r = truth_ratios(subject, retain_truth, batch_size=config.batch_size)
        with using(subject) as m:
            scored = score_items(m, retain_qa, batch_size=config.batch_size, progress=False)
        parts = {
            "retain_prob": float(scored["answer_prob_norm"].mean()),
            "retain_exact_match": float(scored["exact_match"].mean()),
            "retain_truth_ratio": retain_truth_ratio(retain_r),
        }
        rows.append({"model": role, "metric": "forget_truth_ratio", "split": "forget", "value": forget_truth_ratio(forget_r[role]), "n_items": len(forget_items)})
        for name, value in parts.items():
            rows.append({"model": role, "metric": name, "split": "retain", "value": value})
        rows.append({"model": role, "metric": "model_utility", "split": "retain", "value": harmonic_mean(list(parts.values()))})
        if keep_ratios:
            rows += [{"model": role, "metric": "truth_ratio", "split": "forget", "item": i, "subject": t.subject, "attribute": t.attribute, "value": float(v)} for i, (t, v) in enumerate(zip(forget_items, forget_r[role]))]
    if retain_role is not None and retain_role in forget_r:
        for role, ratios in forget_r.items():
            rows.append({"model": role, "metric": "forget_quality", "split": "forget", "value": forget_quality(ratios, forget_r[retain_role])})
    frame = pd.DataFrame(rows)
    frame["method"] = method
    frame["run_id"] = run_id
    first = model_of(next(iter(models.values())))
    return Result(frame, provenance(first.model_id, config, target=target.name, models=list(models)))
