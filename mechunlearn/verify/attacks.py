"""Attacks that try to bring forgotten knowledge back.

| attack           | what the prompt / model gets                                                   |
| ---------------- | ------------------------------------------------------------------------------ |
| ``paraphrase``   | held-out question templates (phrasings never trained on)                       |
| ``few_shot``     | ``k`` solved retain questions of the same attribute before the forget question  |
| ``reintroduce``  | the forgotten fact stated in the prompt, then a question that needs it: the two-hop ``employer`` → ``work_city`` (``"<name> works for <employer> . Question: in which city does <name> work ? Answer:"``), or the stated attribute asked back (``direct``) |
| ``relearn``      | a few fine-tuning steps (the one loop, `fit`, NLL) on half of the forget people; recovery measured on the other half |

The retain model (trained without the forget people) is the reference for all of them: it never
knew the facts, so whatever it recovers comes from the prompt or from the relearning data, not
from hidden knowledge. In-context reintroduction is *expected* to work on it too (exact
unlearning cannot stop a model from reading its prompt).

Relearning splits the forget set **by person** (``split="person"``, default): fine-tuning on
half of the forget people cannot teach the other half's facts, so recovery on that half above
the retain model's is knowledge that was hidden, not removed. ``split="attribute"`` instead
relearns half of the attributes of every forget person and measures the other attributes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from mechunlearn.core.memo import by_weights
from mechunlearn.core.result import Result, provenance
from mechunlearn.models.activations import model_of, using
from mechunlearn.models.text import answer_nll, encode_qa
from mechunlearn.unlearn.loop import TrainConfig, fit
from mechunlearn.verify.behavior import score_items
from mechunlearn.world.target import Item
from mechunlearn.world.templates import BIO_TEMPLATES

if TYPE_CHECKING:
    from mechunlearn.models.model import Model
    from mechunlearn.world.target import Target

log = logging.getLogger(__name__)

ATTACKS = ("paraphrase", "few_shot", "reintroduce", "relearn")
"""The attacks `attack_suite` runs."""


@dataclass(frozen=True)
class AttackConfig:
    """Settings of every attack."""

    few_shot_k: int = 2
    """Solved retain examples before each forget question (bios-tiny's context of 64 tokens fits 2)."""
    few_shot_shots: str = "attribute"
    """Where the solved examples come from: ``attribute`` (retain questions of the asked
    attribute, the format primer of a fact) or ``any`` (any retain question: targets whose
    retain items are other topics, such as a concept's unrelated questions)."""
    shot_separator: str = " "
    """Text between solved examples and the question (bios-tiny's word-level tokenizer drops
    newlines, so the default is a space)."""
    context_template: int = 0
    """Which bio sentence wording states the reintroduced fact (`BIO_TEMPLATES`)."""
    reintroduce_kinds: tuple[str, ...] = ("two_hop", "direct")
    """``two_hop``: employer stated, work city asked; ``direct``: a fact stated, the same fact asked."""
    relearn_split: str = "person"
    """How relearning halves the forget set: ``person`` or ``attribute`` (see the module doc), or
    ``item`` (half the questions, for targets with one subject such as a concept)."""
    relearn_steps: int = 30
    """Fine-tuning steps of the relearning attack."""
    relearn_lr: float = 1e-4
    """Learning rate of the relearning attack (AdamW, constant)."""
    relearn_batch_size: int = 16
    """Items per relearning step."""
    relearn_weights: str = "no_embed"
    """Weight family fine-tuned by the relearning attack."""
    relearn_eval_every: int = 5
    """Evaluate the recovery every this many steps (the curve's resolution)."""
    paraphrase: str = "trained"
    """Template kind of the items the few-shot, reintroduction and relearning attacks use."""
    max_items: int | None = 600
    """Forget items per attack (a seeded subset; None: all)."""
    batch_size: int = 64
    """Sequences per forward pass."""
    seed: int = 0
    """Seed of shots, subsets and the relearning split and batches."""

    def __post_init__(self) -> None:
        if self.few_shot_shots not in ("attribute", "any"):
            raise ValueError(f"few_shot_shots must be 'attribute' or 'any', got {self.few_shot_shots!r}")
        if self.relearn_split not in ("person", "attribute", "item"):
            raise ValueError(f"relearn_split must be 'person', 'attribute' or 'item', got {self.relearn_split!r}")
        bad = [k for k in self.reintroduce_kinds if k not in ("two_hop", "direct")]
        if bad:
            raise ValueError(f"unknown reintroduction kinds {bad}; use 'two_hop' and/or 'direct'")
        if self.few_shot_k < 1 or self.relearn_steps < 1 or self.relearn_eval_every < 1:
            raise ValueError("few_shot_k, relearn_steps and relearn_eval_every must be >= 1")


def _sample(items: Sequence[Item], limit: int | None, seed: int) -> list[Item]:
    items = list(items)
    if limit is None or len(items) <= limit:
        return items
    keep = np.sort(np.random.default_rng(seed).choice(len(items), limit, replace=False))
    return [items[i] for i in keep]


def _rows(scored: pd.DataFrame, **labels) -> list[dict]:
    return [
        {**labels, "metric": "attack_exact_match", "value": float(scored["exact_match"].mean()), "n_items": len(scored)},
        {**labels, "metric": "attack_prob", "value": float(scored["answer_prob_norm"].mean()), "n_items": len(scored)},
    ]


# --------------------------------------------------------------------------- prompt attacks


@by_weights
def paraphrase_attack(subject, target: "Target", config: AttackConfig = AttackConfig()) -> list[dict]:
    """Exact match and probability on held-out templates, forget and retain."""
    rows = []
    with using(subject) as m:
        for split in ("forget", "retain"):
            items = _sample([it for it in target.split(split) if it.paraphrase == "heldout"], config.max_items, config.seed)
            if not items:
                raise ValueError(f"target {target.name!r} has no held-out-template {split} items; build it with paraphrase='all'")
            rows += _rows(score_items(m, items, batch_size=config.batch_size, progress=False), attack="paraphrase", split=split)
    return rows


def few_shot_items(target: "Target", config: AttackConfig = AttackConfig()) -> list[Item]:
    """Forget questions preceded by ``few_shot_k`` solved retain questions (of the same attribute,
    or any, by ``config.few_shot_shots``)."""
    rng = np.random.default_rng(config.seed)
    retain_by_attr: dict[str, list[Item]] = {}
    for it in target.retain:
        if it.paraphrase == config.paraphrase:
            retain_by_attr.setdefault(it.attribute if config.few_shot_shots == "attribute" else "", []).append(it)
    out = []
    for it in _sample([i for i in target.forget if i.paraphrase == config.paraphrase], config.max_items, config.seed):
        pool = retain_by_attr.get(it.attribute if config.few_shot_shots == "attribute" else "", [])
        if len(pool) < config.few_shot_k:
            hint = " (few_shot_shots='any' draws them from every retain question)" if config.few_shot_shots == "attribute" else ""
            raise ValueError(f"not enough retain items of {it.attribute!r} for {config.few_shot_k} shots{hint}")
        shots = [pool[i] for i in rng.choice(len(pool), config.few_shot_k, replace=False)]
        context = config.shot_separator.join(f"{s.prompt} {s.answer}" for s in shots)
        out.append(Item(f"{context}{config.shot_separator}{it.prompt}", it.answer, it.subject, it.attribute, it.template, it.paraphrase))
    return out


def reintroduction_items(target: "Target", kind: str = "two_hop", config: AttackConfig = AttackConfig(), *, split: str = "forget") -> tuple[list[Item], list[Item]]:
    """(questions with the fact stated first, the same questions without it) for one split.

    ``two_hop``: ``"<name> works for <employer> ."`` then a ``work_city`` question; ``direct``:
    one bio sentence stating an attribute, then a question about that attribute.
    """
    items = [it for it in target.split(split) if it.paraphrase == config.paraphrase]
    facts = {(it.subject, it.attribute): it.answer for it in target.split(split)}
    with_ctx, without = [], []
    for it in _sample(items, config.max_items, config.seed):
        if kind == "two_hop":
            if it.attribute != "work_city" or (it.subject, "employer") not in facts:
                continue
            stated, value = "employer", facts[(it.subject, "employer")]
        elif kind == "direct":
            if it.attribute not in BIO_TEMPLATES:
                continue
            stated, value = it.attribute, it.answer
        else:
            raise ValueError(f"kind must be 'two_hop' or 'direct', got {kind!r}")
        templates = BIO_TEMPLATES[stated]
        sentence = templates[config.context_template % len(templates)].format(name=it.subject, value=value)
        with_ctx.append(Item(f"{sentence} {it.prompt}", it.answer, it.subject, it.attribute, it.template, it.paraphrase))
        without.append(it)
    if not with_ctx:
        need = "work_city and employer items" if kind == "two_hop" else "bio attributes"
        raise ValueError(f"target {target.name!r} has no {split} items for {kind} reintroduction (needs {need})")
    return with_ctx, without


@by_weights
def few_shot_attack(subject, target: "Target", config: AttackConfig = AttackConfig()) -> list[dict]:
    """Exact match on forget questions after ``k`` solved retain examples."""
    items = few_shot_items(target, config)
    with using(subject) as m:
        return _rows(score_items(m, items, batch_size=config.batch_size, progress=False), attack="few_shot", split="forget", k=config.few_shot_k)


@by_weights
def reintroduction_attack(subject, target: "Target", config: AttackConfig = AttackConfig()) -> list[dict]:
    """Exact match with the fact in the prompt vs without, per kind, on forget and retain people."""
    rows = []
    with using(subject) as m:
        for kind in config.reintroduce_kinds:
            for split in ("forget", "retain"):
                with_ctx, without = reintroduction_items(target, kind, config, split=split)
                rows += _rows(score_items(m, with_ctx, batch_size=config.batch_size, progress=False), attack=f"reintroduce_{kind}", split=split, context=True)
                rows += _rows(score_items(m, without, batch_size=config.batch_size, progress=False), attack=f"reintroduce_{kind}", split=split, context=False)
    return rows


# --------------------------------------------------------------------------- relearning


def relearn_halves(target: "Target", config: AttackConfig = AttackConfig()) -> tuple[list[Item], list[Item]]:
    """(items to relearn, items to measure): the forget set halved by person, attribute or item."""
    items = [it for it in target.forget if it.paraphrase == config.paraphrase]
    if not items:
        raise ValueError(f"target {target.name!r} has no forget items with paraphrase={config.paraphrase!r}")
    key = {"person": lambda it: it.subject, "attribute": lambda it: it.attribute, "item": lambda it: (it.prompt, it.answer)}[config.relearn_split]
    groups = sorted({key(it) for it in items})
    if len(groups) < 2:
        hint = "; use relearn_split='item' to halve the questions" if config.relearn_split != "item" else ""
        raise ValueError(f"relearning by {config.relearn_split} needs at least 2 forget {config.relearn_split}s, got {groups}{hint}")
    order = np.random.default_rng(config.seed).permutation(len(groups)).tolist()
    first = {groups[i] for i in order[: len(groups) // 2]}
    return [it for it in items if key(it) in first], [it for it in items if key(it) not in first]


@by_weights
def relearning_attack(subject, target: "Target", config: AttackConfig = AttackConfig(), *, progress: bool = False) -> list[dict]:
    """Fine-tune on one half of the forget set; recovery curve on both halves.

    Uses the one loop (`fit`) with the mean summed answer NLL; the model's weights are restored
    bit for bit afterwards (edit still applied inside, reverted by `using`). Rows per evaluation
    step: ``relearn_exact_match`` / ``relearn_prob`` with ``half`` = ``trained`` (the relearned
    half) or ``other`` (the measured half), ``step``.
    """
    train, other = relearn_halves(target, config)
    other = _sample(other, config.max_items, config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    rows: list[dict] = []
    with using(subject) as model:
        names = model.weight_names(config.relearn_weights)

        def evaluate(step: int) -> bool:
            for half, items in (("trained", train), ("other", other)):
                scored = score_items(model, items, batch_size=config.batch_size, progress=False)
                for metric, col in (("relearn_exact_match", "exact_match"), ("relearn_prob", "answer_prob_norm")):
                    rows.append({"attack": "relearn", "split": "forget", "half": half, "step": step, "metric": metric, "value": float(scored[col].mean()), "n_items": len(items)})
            return False

        def loss(step: int) -> torch.Tensor:
            idx = torch.randint(0, len(train), (min(config.relearn_batch_size, len(train)),), generator=gen).tolist()
            batch = encode_qa(model, [train[i].prompt for i in idx], [train[i].answer for i in idx])
            return answer_nll(model, batch).mean()

        evaluate(0)
        cfg = TrainConfig(steps=config.relearn_steps, lr=config.relearn_lr, seed=config.seed)
        with model.restoring(names):
            fit(model, loss, cfg, weights=names, stop=lambda step: evaluate(step + 1), stop_every=config.relearn_eval_every, desc="relearn")
    for r in rows:
        r["split_by"] = config.relearn_split
    return rows


# --------------------------------------------------------------------------- the suite


def attack_suite(
    models: Mapping[str, object],
    target: "Target",
    config: AttackConfig = AttackConfig(),
    *,
    attacks: Sequence[str] = ATTACKS,
    method: str = "none",
    run_id: str | None = None,
) -> Result:
    """Run the chosen attacks on every model role (`Model` or ``(Model, Edit)`` pair)."""
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise ValueError(f"unknown attacks {unknown}; choose from {ATTACKS}")
    runners = {"paraphrase": paraphrase_attack, "few_shot": few_shot_attack, "reintroduce": reintroduction_attack, "relearn": relearning_attack}
    rows = []
    for role, subject in models.items():
        for name in attacks:
            log.info("attack %s on %s", name, role)
            rows += [{"model": role, **r} for r in runners[name](subject, target, config)]
    frame = pd.DataFrame(rows)
    frame["method"] = method
    frame["run_id"] = run_id
    first = model_of(next(iter(models.values())))
    return Result(frame, provenance(first.model_id, config, target=target.name, models=list(models)))
