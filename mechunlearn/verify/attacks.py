"""Attacks that try to bring forgotten knowledge back.

| attack           | what the prompt / model gets                                                   |
| ---------------- | ------------------------------------------------------------------------------ |
| ``paraphrase``   | held-out question templates (phrasings never trained on)                       |
| ``few_shot``     | ``k`` solved retain questions of the same attribute before the forget question  |
| ``reintroduce``  | each item's ``context`` (a sentence stating the fact) before its question: ``direct`` where the context holds the answer, ``two_hop`` where the answer follows from it in another step (the world's ``work_city`` questions after ``"<name> works for <employer> ."``) |
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
import re
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from mechunlearn.core.memo import by_weights
from mechunlearn.core.registry import Registry
from mechunlearn.core.result import Result, provenance
from mechunlearn.models.activations import model_of, using
from mechunlearn.models.text import answer_nll, encode_pair, encode_qa
from mechunlearn.unlearn.loop import TrainConfig, fit
from mechunlearn.verify.behavior import score_items
from mechunlearn.world.target import Item

if TYPE_CHECKING:
    from mechunlearn.models.model import Model
    from mechunlearn.world.target import Target

log = logging.getLogger(__name__)

ATTACKS = ("paraphrase", "few_shot", "reintroduce", "relearn", "retain_finetune", "quantize", "leak")
"""The attacks `attack_suite` runs by default, in order (every name of `ATTACK_RUNNERS`)."""


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
    reintroduce_kinds: tuple[str, ...] = ("two_hop", "direct")
    """Items whose ``context`` holds the answer (``direct``) or does not (``two_hop``: e.g. the
    employer stated, the work city asked); kinds a target has no items of are left out (logged)."""
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
    # -- the tamper suite (ceilings, retain-only fine-tuning, quantization, LoRA relearning, Leak@k)
    min_ceiling: float = 0.5
    """An attack applies to a model only where the unedited model (role ``original``) scores at
    least this on forget items under it (its *ceiling*); below, its rows say
    ``applicable=False`` and why (an attack the unedited model fails cannot reveal anything)."""
    retain_ft_steps: int = 10
    """Fine-tuning steps of the retain-only attack (retain questions only; forget accuracy watched)."""
    retain_ft_lr: float = 1e-4
    """Learning rate of the retain-only attack (AdamW, constant)."""
    quant_bits: tuple[int, ...] = (8, 4)
    """Bit widths of the quantization attack (symmetric round-to-nearest per output channel)."""
    quant_weights: str = "matrices"
    """Weight family quantized (its 2-D weights; biases, norms and embeddings stay float)."""
    relearn_modes: tuple[str, ...] = ("full",)
    """Relearning by ``full`` fine-tuning of ``relearn_weights`` and/or ``lora`` (rank
    ``lora_rank`` adapters on every matrix); both give curves at every ``relearn_eval_every`` steps."""
    lora_rank: int = 4
    """Rank of the LoRA relearning adapters."""
    lora_lr: float = 1e-3
    """Learning rate of LoRA relearning (adapters need a larger one than full fine-tuning)."""
    leak_k: tuple[int, ...] = (1, 4, 16)
    """Leak@k: samples per forget question; a leak when any of the first ``k`` contains the answer."""
    leak_temperature: float = 1.0
    """Sampling temperature of Leak@k."""
    leak_top_p: float = 0.95
    """Nucleus (top-p) mass of Leak@k."""
    leak_max_items: int | None = 200
    """Forget questions sampled by Leak@k (a seeded subset; None: all)."""

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
        if not 0 <= self.min_ceiling <= 1:
            raise ValueError(f"min_ceiling must be in [0, 1], got {self.min_ceiling}")
        if self.retain_ft_steps < 1 or self.lora_rank < 1:
            raise ValueError("retain_ft_steps and lora_rank must be >= 1")
        bad_bits = [b for b in self.quant_bits if not 2 <= b <= 16]
        if bad_bits or not self.quant_bits:
            raise ValueError(f"quant_bits must be integers in [2, 16], got {self.quant_bits}")
        bad_modes = [m for m in self.relearn_modes if m not in ("full", "lora")]
        if bad_modes or not self.relearn_modes:
            raise ValueError(f"relearn_modes must be 'full' and/or 'lora', got {self.relearn_modes}")
        if not self.leak_k or min(self.leak_k) < 1:
            raise ValueError(f"leak_k must be sample counts >= 1, got {self.leak_k}")
        if not self.leak_temperature > 0 or not 0 < self.leak_top_p <= 1:
            raise ValueError(f"Leak@k needs temperature > 0 and top_p in (0, 1], got {self.leak_temperature}, {self.leak_top_p}")


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


def _states(context: str, answer: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(answer)}(?!\w)", context) is not None


def reintroduction_items(target: "Target", kind: str = "two_hop", config: AttackConfig = AttackConfig(), *, split: str = "forget") -> tuple[list[Item], list[Item]]:
    """(questions with their ``context`` sentence first, the same questions without it) for one split.

    ``direct``: items whose context states the answer itself; ``two_hop``: items whose context
    does not (the answer needs another step, e.g. the employer's city). Raises if the split has
    no such item (`reintroduction_kinds` says which kinds a target has).
    """
    if kind not in ("two_hop", "direct"):
        raise ValueError(f"kind must be 'two_hop' or 'direct', got {kind!r}")
    items = [it for it in target.split(split) if it.paraphrase == config.paraphrase and it.context and _states(it.context, it.answer) == (kind == "direct")]
    with_ctx, without = [], []
    for it in _sample(items, config.max_items, config.seed):
        with_ctx.append(replace(it, prompt=f"{it.context} {it.prompt}"))
        without.append(it)
    if not with_ctx:
        need = "a context that does not state the answer" if kind == "two_hop" else "a context that states the answer"
        raise ValueError(f"target {target.name!r} has no {split} items with {need} for {kind} reintroduction (add a context column)")
    return with_ctx, without


def reintroduction_kinds(target: "Target", config: AttackConfig = AttackConfig()) -> tuple[str, ...]:
    """The configured reintroduction kinds that both the forget and the retain split have items of."""
    def has(kind: str, split: str) -> bool:
        return any(it.context and it.paraphrase == config.paraphrase and _states(it.context, it.answer) == (kind == "direct") for it in target.split(split))

    return tuple(k for k in config.reintroduce_kinds if has(k, "forget") and has(k, "retain"))


def attack_needs(target: "Target", name: str, config: AttackConfig = AttackConfig()) -> str | None:
    """Why attack ``name`` cannot run on ``target`` (a field its data lacks), or None if it can."""
    if target.kind == "corpus":
        return "the target has texts but no questions"
    if name == "paraphrase" and not all(any(it.paraphrase == "heldout" for it in target.split(s)) for s in ("forget", "retain")):
        return "no paraphrased questions in forget and retain (a paraphrase column)"
    if name == "few_shot" and config.few_shot_shots == "attribute" and not target.has("attribute", "retain"):
        return "retain items have no attribute to pick same-attribute examples (set few_shot_shots='any')"
    if name == "reintroduce" and not reintroduction_kinds(target, config):
        return "no forget and retain items with a context sentence (a context column)"
    if name == "relearn" and config.relearn_split != "item":
        groups = {getattr(it, "subject" if config.relearn_split == "person" else "attribute") for it in target.forget}
        if len(groups - {""}) < 2:
            return f"relearning by {config.relearn_split} needs 2 forget {config.relearn_split}s (subject/attribute columns, or relearn_split='item')"
    return None


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
        kinds = reintroduction_kinds(target, config)
        if not kinds:
            raise ValueError(f"target {target.name!r} has no forget and retain items with a context sentence: reintroduction needs the context column")
        for kind in sorted(set(config.reintroduce_kinds) - set(kinds)):
            log.info("reintroduction: no %s items in %s; left out", kind, target.name)
        for kind in kinds:
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


@contextmanager
def lora_adapters(model: "Model", names: Sequence[str], rank: int, seed: int = 0) -> Iterator[list[torch.Tensor]]:
    """Rank-``rank`` LoRA adapters on the ``nn.Linear`` modules that hold the weights ``names``.

    Each module's output becomes ``y + (x Aᵀ) Bᵀ`` (A ``[rank, in]`` random, B ``[out, rank]``
    zero, so the model starts unchanged) through a forward hook; yields the factors for `fit`'s
    ``extra`` and removes exactly its hooks on exit. The weights themselves are never written.
    """
    owners = {id(p): mod for mod in model.bridge.modules() if isinstance(mod, torch.nn.Linear) for p in mod.parameters(recurse=False)}
    gen = torch.Generator().manual_seed(seed)
    handles, factors = [], []
    try:
        for name in names:
            param = model.weight_spec(name).param
            module = owners.get(id(param))
            if module is None or module.weight is not param:
                raise ValueError(f"LoRA adapts nn.Linear weights; {name} is not one (use the 'matrices' weight family)")
            out_features, in_features = param.shape
            a = (torch.randn(rank, in_features, generator=gen) / in_features**0.5).to(param).requires_grad_(True)
            b = torch.zeros(out_features, rank).to(param).requires_grad_(True)
            handles.append(module.register_forward_hook(lambda mod, inputs, out, a=a, b=b: out + (inputs[0] @ a.T) @ b.T))
            factors += [a, b]
        yield factors
    finally:
        for h in handles:
            h.remove()


def finetune_curve(
    model: "Model",
    train: Sequence[Item],
    evals: Mapping[str, Sequence[Item]],
    config: AttackConfig,
    *,
    steps: int,
    lr: float,
    mode: str = "full",
    weights: str = "no_embed",
    desc: str = "finetune",
    keep: dict | None = None,
) -> list[dict]:
    """Fine-tune ``model`` on ``train`` (answer NLL, the one loop) and score every ``evals`` set
    at step 0 and every ``relearn_eval_every`` steps; the weights are restored bit for bit after.
    With ``keep`` (a dict; ``full`` mode only), the fine-tuned weights (name -> clone) are copied
    into it before they are restored (the meta-evaluation's relearned models, `verify.meta`).

    ``mode``: ``full`` trains the ``weights`` family, ``lora`` rank-``lora_rank`` adapters on the
    matrices (hooks, removed after). Rows: ``eval`` (the set's name), ``step``, ``exact_match``,
    ``prob``, ``n_items``.
    """
    if not train:
        raise ValueError(f"{desc}: no items to fine-tune on")
    gen = torch.Generator().manual_seed(config.seed)
    rows: list[dict] = []

    def evaluate(step: int) -> bool:
        for label, items in evals.items():
            scored = score_items(model, items, batch_size=config.batch_size, progress=False)
            rows.append({"eval": label, "step": step, "exact_match": float(scored["exact_match"].mean()), "prob": float(scored["answer_prob_norm"].mean()), "n_items": len(items)})
        return False

    def loss(step: int) -> torch.Tensor:
        idx = torch.randint(0, len(train), (min(config.relearn_batch_size, len(train)),), generator=gen).tolist()
        batch = encode_qa(model, [train[i].prompt for i in idx], [train[i].answer for i in idx])
        return answer_nll(model, batch).mean()

    if keep is not None and mode != "full":
        raise ValueError(f"keep takes the fine-tuned weights of mode 'full', not {mode!r} (LoRA adapters are hooks)")
    evaluate(0)
    cfg = TrainConfig(steps=steps, lr=lr, seed=config.seed)
    every = min(config.relearn_eval_every, steps)
    if mode == "lora":
        with lora_adapters(model, model.weight_names("matrices"), config.lora_rank, config.seed) as factors:
            fit(model, loss, cfg, weights=[], extra=factors, stop=lambda step: evaluate(step + 1), stop_every=every, desc=desc)
    elif mode == "full":
        names = model.weight_names(weights)
        with model.restoring(names):
            fit(model, loss, cfg, weights=names, stop=lambda step: evaluate(step + 1), stop_every=every, desc=desc)
            if keep is not None:
                keep.update({n: model.weight(n).detach().clone() for n in names})
    else:
        raise ValueError(f"mode must be 'full' or 'lora', got {mode!r}")
    return rows


@by_weights
def relearning_attack(subject, target: "Target", config: AttackConfig = AttackConfig(), *, progress: bool = False) -> list[dict]:
    """Fine-tune on one half of the forget set; recovery curve on both halves.

    Uses the one loop (`fit`) with the mean summed answer NLL; the model's weights are restored
    bit for bit afterwards (edit still applied inside, reverted by `using`). Rows per evaluation
    step: ``relearn_exact_match`` / ``relearn_prob`` with ``half`` = ``trained`` (the relearned
    half) or ``other`` (the measured half), ``step``; attack ``relearn`` (full fine-tuning) or
    ``relearn_lora`` (``relearn_modes``). The step budgets of a curve are its ``step`` values.
    """
    train, other = relearn_halves(target, config)
    other = _sample(other, config.max_items, config.seed)
    rows: list[dict] = []
    with using(subject) as model:
        for mode in config.relearn_modes:
            lr = config.relearn_lr if mode == "full" else config.lora_lr
            curve = finetune_curve(model, train, {"trained": train, "other": other}, config, steps=config.relearn_steps, lr=lr, mode=mode, weights=config.relearn_weights, desc=f"relearn ({mode})")
            attack = "relearn" if mode == "full" else f"relearn_{mode}"
            for r in curve:
                for metric, col in (("relearn_exact_match", "exact_match"), ("relearn_prob", "prob")):
                    rows.append({"attack": attack, "split": "forget", "half": r["eval"], "step": r["step"], "metric": metric, "value": r[col], "n_items": r["n_items"], "split_by": config.relearn_split})
    return rows


# --------------------------------------------------------------------------- the tamper suite


@by_weights
def retain_finetune_attack(subject, target: "Target", config: AttackConfig = AttackConfig()) -> list[dict]:
    """Fine-tune on retain questions only and watch forget accuracy: forgotten answers that come
    back without ever being shown were dormant, not deleted. Rows per step on forget and retain."""
    retain = [it for it in target.retain if it.paraphrase == config.paraphrase]
    forget = _sample([it for it in target.forget if it.paraphrase == config.paraphrase], config.max_items, config.seed)
    if not retain or not forget:
        raise ValueError(f"target {target.name!r} needs forget and retain items with paraphrase={config.paraphrase!r}")
    evals = {"forget": forget, "retain": _sample(retain, config.max_items, config.seed)}
    with using(subject) as model:
        curve = finetune_curve(model, retain, evals, config, steps=config.retain_ft_steps, lr=config.retain_ft_lr, weights=config.relearn_weights, desc="retain-only fine-tuning")
    rows = []
    for r in curve:
        for metric, col in (("attack_exact_match", "exact_match"), ("attack_prob", "prob")):
            rows.append({"attack": "retain_finetune", "split": r["eval"], "step": r["step"], "metric": metric, "value": r[col], "n_items": r["n_items"]})
    return rows


@torch.no_grad()
def quantize_(model: "Model", bits: int, names: Sequence[str]) -> None:
    """Round the weights ``names`` to ``bits``-bit integers in place: symmetric, one scale per
    output channel (row of the stored ``[out, in]`` matrix), ``w ← round(w / s) · s`` with
    ``s = max|w_row| / (2^(bits-1) − 1)``. Undo with `Model.restoring` (see `quantized`)."""
    qmax = 2 ** (bits - 1) - 1
    for name in names:
        param = model.weight_spec(name).param
        if param.dim() != 2:
            raise ValueError(f"quantization takes 2-D weights; {name} has shape {tuple(param.shape)}")
        scale = param.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(param.dtype).tiny) / qmax
        param.copy_((param / scale).round().clamp(-qmax, qmax) * scale)


@contextmanager
def quantized(model: "Model", bits: int, weights: str = "matrices") -> Iterator["Model"]:
    """The model with its ``weights`` family's 2-D weights quantized (`quantize_`) inside the
    block, restored bit for bit on exit (errors included)."""
    names = [n for n in model.weight_names(weights) if model.weight_spec(n).param.dim() == 2]
    if not names:
        raise ValueError(f"weight family {weights!r} has no 2-D weights to quantize")
    with model.restoring(names):
        quantize_(model, bits, names)
        yield model


@by_weights
def quantization_attack(subject, target: "Target", config: AttackConfig = AttackConfig()) -> list[dict]:
    """Exact match on forget and retain items after int-``b`` round-to-nearest quantization of
    the (edited) weights, for each ``b`` of ``quant_bits`` (attack ``quantize_int<b>``).
    Unlearning by weight changes smaller than half a quantization step is undone by it."""
    rows = []
    sets = {split: _sample([it for it in target.split(split) if it.paraphrase == config.paraphrase], config.max_items, config.seed) for split in ("forget", "retain")}
    with using(subject) as m:
        for bits in config.quant_bits:
            with quantized(m, bits, config.quant_weights):
                for split, items in sets.items():
                    rows += _rows(score_items(m, items, batch_size=config.batch_size, progress=False), attack=f"quantize_int{bits}", split=split, bits=bits)
    return rows


@torch.no_grad()
def sample_continuations(model: "Model", prompts: Sequence[str], n: int, max_new_tokens: Sequence[int], *, temperature: float, top_p: float, generator: torch.Generator, batch_size: int = 64) -> list[list[str]]:
    """``n`` sampled continuations per prompt (temperature, nucleus top-p; seeded by
    ``generator``), each at most its prompt's ``max_new_tokens`` long and cut at EOS."""
    rows = [model.encode(p, prepend_bos=model.prepend_bos) for p in prompts for _ in range(n)]
    budgets = [b for b in max_new_tokens for _ in range(n)]
    texts: list[str] = []
    per_batch = max(1, batch_size)
    for start in range(0, len(rows), per_batch):
        chunk, budget = rows[start : start + per_batch], torch.tensor(budgets[start : start + per_batch])
        lengths = torch.tensor([len(r) for r in chunk])
        width = min(int(lengths.max()) + int(budget.max()), model.n_ctx)
        tokens = torch.full((len(chunk), width), model.pad_token_id, dtype=torch.long)
        for i, r in enumerate(chunk):
            tokens[i, : len(r)] = torch.tensor(r)
        new: list[list[int]] = [[] for _ in chunk]
        done = torch.zeros(len(chunk), dtype=torch.bool)
        for step in range(int(budget.max())):
            if int(lengths.max()) >= width:
                break
            logits = model.forward(tokens[:, : int(lengths.max())])[torch.arange(len(chunk)), lengths - 1].float().cpu()
            probs = torch.softmax(logits / temperature, dim=-1)
            sorted_p, order = probs.sort(dim=-1, descending=True)
            outside = sorted_p.cumsum(-1) - sorted_p >= top_p  # tokens past the nucleus (the top one always stays)
            sorted_p[outside] = 0.0
            pick = order.gather(-1, torch.multinomial(sorted_p, 1, generator=generator))[:, 0]
            for i, t in enumerate(pick.tolist()):
                if not done[i]:
                    new[i].append(t)
                    done[i] = t == model.eos_token_id or step + 1 >= int(budget[i])
            tokens[torch.arange(len(chunk)), lengths] = pick
            lengths = lengths + 1
            if bool(done.all()):
                break
        texts += [model.tokenizer.decode([t for t in ids if t != model.eos_token_id]) for ids in new]
    return [texts[i * n : (i + 1) * n] for i in range(len(prompts))]


def contains_answer(text: str, answer: str) -> bool:
    """Whether ``answer`` occurs in ``text`` as whole words (case-insensitive)."""
    return re.search(rf"(?<!\w){re.escape(answer.strip())}(?!\w)", text, flags=re.IGNORECASE) is not None


@by_weights
def leak_attack(subject, target: "Target", config: AttackConfig = AttackConfig()) -> list[dict]:
    """Leak@k: sample ``k`` answers per forget question and count a leak when any contains the
    forgotten answer (greedy decoding hides leaks that sampling reveals, arXiv 2511.04934).
    One seeded draw of ``max(leak_k)`` samples; Leak@k reads its first ``k``, so it never falls
    as ``k`` grows. Also ``leak_greedy``: the greedy answer contains it. Each sampled answer is
    as many tokens long as the true one (or ends at EOS), so a leak is the answer itself, not a
    longer ramble that happens to name it."""
    items = _sample([it for it in target.forget if it.paraphrase == config.paraphrase], config.leak_max_items, config.seed)
    if not items:
        raise ValueError(f"target {target.name!r} has no forget items with paraphrase={config.paraphrase!r}")
    n = max(config.leak_k)
    with using(subject) as m:
        budgets = [len(encode_pair(m, it.prompt, it.answer)[1]) for it in items]
        gen = torch.Generator().manual_seed(config.seed)
        samples = sample_continuations(m, [it.prompt for it in items], n, budgets, temperature=config.leak_temperature, top_p=config.leak_top_p, generator=gen, batch_size=config.batch_size)
        greedy = [""] * len(items)
        for budget in set(budgets):  # each greedy answer as long as its true one, too
            idx = [i for i, b in enumerate(budgets) if b == budget]
            for i, text in zip(idx, m.generate([items[i].prompt for i in idx], budget, batch_size=config.batch_size)):
                greedy[i] = text
    hits = np.array([[contains_answer(s, it.answer) for s in row] for row, it in zip(samples, items)])
    common = {"attack": "leak", "split": "forget", "n_items": len(items), "temperature": config.leak_temperature, "top_p": config.leak_top_p}
    rows = [{**common, "metric": "leak_at_k", "k": k, "value": float(hits[:, :k].any(axis=1).mean())} for k in sorted(set(config.leak_k))]
    rows.append({**common, "metric": "leak_greedy", "value": float(np.mean([contains_answer(g, it.answer) for g, it in zip(greedy, items)]))})
    return rows


SCORE_METRICS = ("attack_exact_match", "relearn_exact_match", "leak_at_k", "leak_greedy")
"""The metrics whose forget-split value on the unedited model is an attack's ceiling."""


def with_ceilings(frame: pd.DataFrame, min_ceiling: float) -> pd.DataFrame:
    """Beside every row, the unedited model's value under the same attack and settings
    (``ceiling``) and the retain model's (``oracle``), from the rows of roles ``original`` and
    ``retain``; ``applicable`` is False, with the ``reason``, for every row of an attack whose
    mean ceiling on forget items (`SCORE_METRICS`) is below ``min_ceiling``."""
    frame = frame.copy()
    keys = [c for c in frame.columns if c not in ("model", "value", "n_items")]
    key = frame[keys].map(str).agg("|".join, axis=1)
    for role, column in (("original", "ceiling"), ("retain", "oracle")):
        mine = frame["model"] == role
        frame[column] = key.map(dict(zip(key[mine], frame.loc[mine, "value"])))
    heads = frame[(frame["model"] == "original") & frame["metric"].isin(SCORE_METRICS) & (frame["split"] == "forget")]
    level = heads.groupby("attack")["value"].mean()
    frame["applicable"] = frame["attack"].map(level >= min_ceiling).astype(object)
    low = frame["applicable"].eq(False)
    frame["reason"] = None
    frame.loc[low, "reason"] = frame.loc[low, "attack"].map(
        lambda a: f"not applicable: the unedited model scores {level[a]:.3f} on forget items under {a} (min_ceiling {min_ceiling}), so the attack cannot reveal hidden knowledge"
    )
    unknown = frame["applicable"].isna()
    frame.loc[unknown, "reason"] = "ceiling unknown: no unedited model (role 'original') was attacked"
    return frame


# --------------------------------------------------------------------------- the suite

ATTACK_RUNNERS: Registry = Registry("attack")
"""Attack name -> ``runner(subject, target, config) -> rows`` (one registry of attacks)."""
for _name, _runner in (
    ("paraphrase", paraphrase_attack),
    ("few_shot", few_shot_attack),
    ("reintroduce", reintroduction_attack),
    ("relearn", relearning_attack),
    ("retain_finetune", retain_finetune_attack),
    ("quantize", quantization_attack),
    ("leak", leak_attack),
):
    ATTACK_RUNNERS.add(_name, _runner)


def attack_suite(
    models: Mapping[str, object],
    target: "Target",
    config: AttackConfig = AttackConfig(),
    *,
    attacks: Sequence[str] = ATTACKS,
    method: str = "none",
    run_id: str | None = None,
) -> Result:
    """Run the chosen attacks on every model role (`Model` or ``(Model, Edit)`` pair).

    Every row carries the unedited model's value under the same attack (``ceiling``, from role
    ``original``) and the retain model's (``oracle``, role ``retain``), and ``applicable`` /
    ``reason`` (see `with_ceilings`)."""
    unknown = [a for a in attacks if a not in ATTACK_RUNNERS]
    if unknown:
        raise ValueError(f"unknown attacks {unknown}; choose from {ATTACKS}")
    rows = []
    for role, subject in models.items():
        for name in attacks:
            log.info("attack %s on %s", name, role)
            rows += [{"model": role, **r} for r in ATTACK_RUNNERS.get(name)(subject, target, config)]
    frame = with_ceilings(pd.DataFrame(rows), config.min_ceiling)
    frame["method"] = method
    frame["run_id"] = run_id
    first = model_of(next(iter(models.values())))
    return Result(frame, provenance(first.model_id, config, target=target.name, models=list(models)))
