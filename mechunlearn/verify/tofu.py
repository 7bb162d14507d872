"""TOFU metrics (Maini et al. 2024), named and computed as open-unlearning names and computes them.

For a question q with paraphrased (true) answers ã and perturbed (false) answers â, with L̄(a)
the mean token NLL of answer a after q (`score_items`' ``avg_loss``; under the ``tofu``
protocol the EOS token counts, `mechunlearn.verify.protocol`):

    R_truth = exp(−mean_â L̄(â)) / (exp(−mean_ã L̄(ã)) + 1e-10)

a *geometric* mean of the false answers' normalised probabilities over the true answers' (TOFU
has one paraphrased answer; our world has several, and open-unlearning averages the losses of
several the same way). A model that knows the fact has R ≪ 1; one that never saw it R ≈ 1.

| metric | definition | open-unlearning |
| ------ | ---------- | --------------- |
| ``forget_truth_ratio`` | mean over forget items of min(R, 1/(R + 1e-10)) (1 is best) | ``src/evals/metrics/memorization.py:107-174``, ``configs/eval/tofu_metrics/forget_Truth_Ratio.yaml`` |
| ``retain_Truth_Ratio`` | mean over retain items of max(0, 1 − R) | same file; ``retain_Truth_Ratio.yaml`` |
| ``forget_quality`` | p-value of the two-sample KS test between the model's and the retain model's R on the forget items | ``src/evals/metrics/privacy.py:6-32``; ``forget_quality.yaml`` |
| ``forget_Q_A_Prob``, ``retain_Q_A_Prob`` | mean of exp(−L̄(answer)) | ``memorization.py:20-41``, ``utils.py:82-103`` |
| ``forget_Q_A_ROUGE``, ``retain_Q_A_ROUGE`` | mean ROUGE-L recall (``rouge-score``, stemmed) of the greedy generation against the answer | ``memorization.py:75-104``, ``utils.py:251-336`` |
| ``exact_memorization`` | mean share of forget-answer tokens whose teacher-forced argmax is right | ``memorization.py:177-219`` |
| ``extraction_strength`` | mean 1 − k/n, k the first answer position from which every argmax is right | ``memorization.py:222-269`` |
| ``retain_utility`` | harmonic mean of ``retain_Q_A_Prob``, ``retain_Q_A_ROUGE``, ``retain_Truth_Ratio`` | the retain-set third of ``model_utility.yaml`` |
| ``model_utility`` | harmonic mean of the 9 parts of `MODEL_UTILITY_PARTS` (`model_utility`) | ``utility.py:13-16``, ``model_utility.yaml`` |

``model_utility`` also needs the real-authors and world-facts sets, which no target here has: the
card reports ``retain_utility`` instead, and `model_utility` refuses any other set of parts.
The retain model's forget quality against itself is 1 by definition; the original model's is
typically tiny. Truth items (question + paraphrased + perturbed answers) come from the items'
``paraphrased_answers`` and ``perturbed_answers`` (the world fills them; files give them).
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
from mechunlearn.verify.protocol import PROTOCOLS, protocol_for
from mechunlearn.verify.similarity import rouge
from mechunlearn.world.target import Item

if TYPE_CHECKING:
    from mechunlearn.models.model import Model
    from mechunlearn.world.target import Target

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


def truth_items(items: Sequence[Item], *, template: int = 0) -> list[TruthItem]:
    """One `TruthItem` per fact among ``items`` (a fact: a (subject, attribute) pair, or for
    items without both, the question itself), asked with the fact's ``template``-th question
    of the trained templates, from the items' own paraphrased and perturbed answers."""
    facts: dict[tuple, list[Item]] = {}
    for it in items:
        if it.paraphrase == "trained":
            facts.setdefault((it.subject, it.attribute) if it.subject and it.attribute else (it.prompt, it.answer), []).append(it)
    if not facts:
        raise ValueError("no items to build truth-ratio questions from")
    out = []
    for key, asked in facts.items():
        if not 0 <= template < len(asked):
            raise ValueError(f"template {template} out of range: {key} has {len(asked)} trained questions")
        it = asked[template]
        if not it.paraphrased_answers or not it.perturbed_answers:
            raise ValueError(f"item {it.prompt!r} has no paraphrased or no perturbed answers: the truth ratio needs both (paraphrased_answer and perturbed_answers columns)")
        out.append(TruthItem(it.prompt, it.paraphrased_answers, it.perturbed_answers, it.subject, it.attribute))
    return out


def truth_ratio_from_losses(paraphrased: Sequence[float], perturbed: Sequence[float]) -> float:
    """R = exp(−mean perturbed loss) / (exp(−mean paraphrased loss) + 1e-10), from the answers'
    mean token NLLs (open-unlearning ``src/evals/metrics/memorization.py:149-164``: losses
    averaged over the answers, then exponentiated: a geometric mean of normalised probabilities)."""
    if len(paraphrased) == 0 or len(perturbed) == 0:
        raise ValueError("a truth ratio needs at least one paraphrased and one perturbed answer")
    para, pert = np.asarray(paraphrased, dtype=float), np.asarray(perturbed, dtype=float)
    if np.isnan(para).any() or np.isnan(pert).any() or (para < 0).any() or (pert < 0).any():
        raise ValueError(f"answer losses must be non-negative numbers, got {list(para)} and {list(pert)}")
    return float(np.exp(-pert.mean()) / (np.exp(-para.mean()) + 1e-10))


@by_weights
def truth_ratios(model, items: Sequence[TruthItem], *, batch_size: int = 64, eos: bool = False) -> np.ndarray:
    """R_truth of every item under ``model`` (a `Model` or ``(Model, Edit)`` pair); ``eos``
    counts the end-of-sequence token in every answer's loss (TOFU's protocol)."""
    if not items:
        raise ValueError("no truth items")
    flat = [Item(t.prompt, a) for t in items for a in (*t.paraphrased, *t.perturbed)]
    with using(model) as m:
        losses = score_items(m, flat, batch_size=batch_size, eos=eos, progress=False)["avg_loss"].to_numpy()
    out, at = [], 0
    for t in items:
        n_para, n_pert = len(t.paraphrased), len(t.perturbed)
        out.append(truth_ratio_from_losses(losses[at : at + n_para], losses[at + n_para : at + n_para + n_pert]))
        at += n_para + n_pert
    return np.asarray(out)


def forget_truth_ratio(ratios: Sequence[float]) -> float:
    """TOFU's forget-set truth ratio: mean of min(R, 1/(R + 1e-10)) (open-unlearning's
    ``closer_to_1_better``, ``src/evals/metrics/memorization.py:114-115``)."""
    r = np.asarray(ratios, dtype=float)
    return float(np.mean(np.minimum(r, 1.0 / (r + 1e-10))))


def retain_truth_ratio(ratios: Sequence[float]) -> float:
    """TOFU's retain-set truth ratio: mean of max(0, 1 − R) (open-unlearning's ``true_better``,
    ``src/evals/metrics/memorization.py:117-120``)."""
    r = np.asarray(ratios, dtype=float)
    return float(np.mean(np.maximum(0.0, 1.0 - r)))


def forget_quality(ratios: Sequence[float], retain_ratios: Sequence[float]) -> float:
    """p-value of the two-sample KS test between two truth-ratio samples: TOFU's forget quality
    (open-unlearning ``src/evals/metrics/privacy.py:6-32``, ``ks_2samp`` of the model's forget
    R values against the retain model's)."""
    a, b = np.asarray(ratios, dtype=float), np.asarray(retain_ratios, dtype=float)
    if a.size == 0 or b.size == 0:
        raise ValueError("forget quality needs truth ratios from both models")
    return float(ks_2samp(a, b).pvalue)


def harmonic_mean(values: Sequence[float]) -> float:
    """Harmonic mean; 0 if any value is 0 (``scipy.stats.hmean``, which open-unlearning's
    ``hm_aggregate`` calls, ``src/evals/metrics/utility.py:13-16``)."""
    v = np.asarray(values, dtype=float)
    if v.size == 0 or (v < 0).any() or np.isnan(v).any():
        raise ValueError(f"harmonic mean needs non-negative values, got {list(v)}")
    if (v == 0).any():
        return 0.0
    return float(v.size / np.sum(1.0 / v))


MODEL_UTILITY_PARTS = tuple(f"{s}_{m}" for s in ("retain", "ra", "wf") for m in ("Q_A_Prob", "Q_A_ROUGE", "Truth_Ratio"))
"""open-unlearning's 9 parts of ``model_utility`` (``configs/eval/tofu_metrics/model_utility.yaml``:
retain, real-authors and world-facts sets × probability, ROUGE-L recall, truth ratio; on the ra
and wf sets the probability is ``*_Q_A_Prob_normalised``, P(true) / (P(true) + Σ P(false)))."""
RETAIN_UTILITY_PARTS = MODEL_UTILITY_PARTS[:3]
"""The retain-set parts of ``model_utility``, whose harmonic mean is ``retain_utility``."""


def model_utility(parts: Mapping[str, float]) -> float:
    """open-unlearning's ``model_utility``: the harmonic mean of all 9 `MODEL_UTILITY_PARTS`
    (``ra_*_Q_A_Prob`` / ``wf_*_Q_A_Prob`` standing for their ``_normalised`` forms). Any other
    set of parts is another number, so it is an error (use `retain_utility`)."""
    missing = [p for p in MODEL_UTILITY_PARTS if p not in parts]
    extra = [p for p in parts if p not in MODEL_UTILITY_PARTS]
    if missing or extra:
        raise ValueError(f"model_utility is the harmonic mean of exactly {list(MODEL_UTILITY_PARTS)}; missing {missing}, unknown {extra} (use retain_utility for the retain set alone)")
    return harmonic_mean([parts[p] for p in MODEL_UTILITY_PARTS])


def retain_utility(parts: Mapping[str, float]) -> float:
    """Harmonic mean of `RETAIN_UTILITY_PARTS` (the retain third of ``model_utility``)."""
    missing = [p for p in RETAIN_UTILITY_PARTS if p not in parts]
    if missing:
        raise ValueError(f"retain_utility needs {list(RETAIN_UTILITY_PARTS)}; missing {missing}")
    return harmonic_mean([parts[p] for p in RETAIN_UTILITY_PARTS])


def generation_rouge(model: "Model", items: Sequence[Item], *, max_new_tokens: int, batch_size: int = 64) -> list[float]:
    """ROUGE-L recall of each item's greedy generation (up to ``max_new_tokens``, stopping at
    EOS) against its answer: open-unlearning's ``rougeL_recall`` (``src/evals/metrics/utils.py:251-336``)."""
    if not items:
        raise ValueError("no items to generate for")
    outs = model.generate([it.prompt for it in items], max_new_tokens=max_new_tokens, batch_size=batch_size)
    return [rouge(gen.strip(), it.answer)["rougeL_recall"] for gen, it in zip(outs, items)]


QA_SCORES = ("answer_prob_norm", "exact_memorization", "extraction_strength")


@by_weights
def qa_scores(model, items: Sequence[Item], *, max_new_tokens: int, batch_size: int = 64, eos: bool = False) -> dict[str, np.ndarray]:
    """Per-item QA scores of ``model`` (a `Model` or ``(Model, Edit)`` pair): `QA_SCORES` from one
    scoring pass, and ``rougeL_recall`` of the greedy generation (`generation_rouge`). Memoised by
    weights: a study's reference models are scored and generate once per process."""
    with using(model) as m:
        scored = score_items(m, items, batch_size=batch_size, eos=eos, progress=False)
        out = {name: scored[name].to_numpy(dtype=float) for name in QA_SCORES}
        out["rougeL_recall"] = np.asarray(generation_rouge(m, items, max_new_tokens=max_new_tokens, batch_size=batch_size), dtype=float)
    return out


@dataclass(frozen=True)
class TofuConfig:
    """TOFU-style metric settings."""

    template: int = 0
    """Which trained question template asks the truth-ratio questions."""
    max_retain_people: int | None = 40
    """Retain subjects (people; for items without a subject, questions) of the retain-side truth
    ratio (seeded subset; None: all)."""
    max_qa_items: int | None = 1000
    """Forget and retain QA items (each) scored for probability, ROUGE and memorization (seeded subset; None: all)."""
    max_new_tokens: int = 32
    """Greedy tokens generated for ROUGE (open-unlearning generates up to 200: raise it for long answers)."""
    protocol: str | None = None
    """Scoring protocol (`mechunlearn.verify.protocol`: ``mechunlearn`` or ``tofu``); None: the target's."""
    batch_size: int = 64
    """Sequences per forward pass."""
    seed: int = 0
    """Seed of the subsets."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.protocol is not None:
            PROTOCOLS.get(self.protocol)


def _sample(values: list, limit: int | None, seed: int) -> list:
    if limit is None or len(values) <= limit:
        return values
    keep = np.sort(np.random.default_rng(seed).choice(len(values), limit, replace=False))
    return [values[i] for i in keep]


def tofu_metrics(
    models: Mapping[str, object],
    target: "Target",
    config: TofuConfig = TofuConfig(),
    *,
    retain_role: str | None = "retain",
    keep_items: bool = False,
    method: str = "none",
    run_id: str | None = None,
) -> Result:
    """The metrics of the module docstring for each model role (``forget_quality`` of each role
    against ``retain_role``), each row with the ``protocol`` it was scored under. With
    ``keep_items``, the per-item values behind each mean are included as ``metric="tofu_item"``
    rows (column ``of``: the metric they make up; ``item``: the item's index)."""
    proto = protocol_for(target, config.protocol)
    forget_items = truth_items(target.forget, template=config.template)
    retain_truth = truth_items(target.retain, template=config.template)
    keep = set(_sample(sorted({t.subject or t.prompt for t in retain_truth}), config.max_retain_people, config.seed))
    retain_truth = [t for t in retain_truth if (t.subject or t.prompt) in keep]
    qa = {"forget": _sample(list(target.forget), config.max_qa_items, config.seed), "retain": _sample(list(target.retain), config.max_qa_items, config.seed)}
    rows: list[dict] = []
    forget_r: dict[str, np.ndarray] = {}

    def put(role: str, name: str, split: str, per_item: Sequence[float], value: float | None = None) -> None:
        values = np.asarray(per_item, dtype=float)
        rows.append({"model": role, "metric": name, "split": split, "value": float(values.mean()) if value is None else value, "n_items": len(values)})
        if keep_items:
            rows.extend({"model": role, "metric": "tofu_item", "of": name, "split": split, "item": i, "value": float(v)} for i, v in enumerate(values))

    for role, subject in models.items():
        forget_r[role] = truth_ratios(subject, forget_items, batch_size=config.batch_size, eos=proto.eos)
        retain_r = truth_ratios(subject, retain_truth, batch_size=config.batch_size, eos=proto.eos)
        put(role, "forget_truth_ratio", "forget", forget_r[role], forget_truth_ratio(forget_r[role]))
        put(role, "retain_Truth_Ratio", "retain", retain_r, retain_truth_ratio(retain_r))
        parts = {"retain_Truth_Ratio": retain_truth_ratio(retain_r)}
        for split, items in qa.items():
            scored = qa_scores(subject, tuple(items), max_new_tokens=config.max_new_tokens, batch_size=config.batch_size, eos=proto.eos)
            put(role, f"{split}_Q_A_Prob", split, scored["answer_prob_norm"])
            put(role, f"{split}_Q_A_ROUGE", split, scored["rougeL_recall"])
            parts[f"{split}_Q_A_Prob"], parts[f"{split}_Q_A_ROUGE"] = float(scored["answer_prob_norm"].mean()), float(scored["rougeL_recall"].mean())
            if split == "forget":
                put(role, "exact_memorization", split, scored["exact_memorization"])
                put(role, "extraction_strength", split, scored["extraction_strength"])
        rows.append({"model": role, "metric": "retain_utility", "split": "retain", "value": retain_utility(parts)})
    if retain_role is not None and retain_role in forget_r:
        for role, ratios in forget_r.items():
            rows.append({"model": role, "metric": "forget_quality", "split": "forget", "value": forget_quality(ratios, forget_r[retain_role])})
    frame = pd.DataFrame(rows)
    frame["protocol"] = proto.name
    frame["method"] = method
    frame["run_id"] = run_id
    first = model_of(next(iter(models.values())))
    return Result(frame, provenance(first.model_id, config, target=target.name, models=list(models), protocol=proto.name))
