"""The evaluation card: one call runs the whole verification suite on an edit.

>>> edit = unlearn(model, target, UnlearnConfig(loss="npo", steps=60))
>>> card = evaluation_card((model, edit), model, retain_model, target, CardConfig())
>>> card = evaluation_card((model, edit), None, load_model("my_retain_model.gguf"), load_target("my_data"))
>>> card.frame.query("metric == 'forget_quality'")
>>> card_summary(card)                 # one row per model role, the headline numbers
>>> evaluation_card({"ga": (model, ga), "npo": (model, npo)}, model, retain_model, target)  # side by side

Sections (column ``section``) and the model roles they score (column ``model``: ``original``,
``edited``, ``retain``):

| section       | what                                                                    | roles                |
| ------------- | ----------------------------------------------------------------------- | -------------------- |
| ``behavior``  | exact match, answer log-prob, normalised probability per split          | all                  |
| ``choice``    | multiple-choice accuracy per split (`mechunlearn.verify.choice`)        | all                  |
| ``probes``    | per-layer probe accuracy (refit; transfer from the original)            | all                  |
| ``weights``   | ‖Δθ‖/‖θ‖, spectrum, density per weight and per layer × module            | each edit that changes weights (its deltas, or an edited Model's weights against the original's); hook-only edits are skipped with the reason in the provenance |
| ``activations`` | activation shift at every block's residual on forget vs retain prompts | each edit vs original |
| ``attacks``   | paraphrase, few-shot, in-context reintroduction, relearning curves      | all                  |
| ``mia``       | ``mia_*`` AUCs (``mia_reference``: the retain model as reference), ``privleak`` against the retain model | all |
| ``tofu``      | ``forget_truth_ratio``, ``forget_quality``, ``retain_utility``, ``*_Q_A_Prob``, ``*_Q_A_ROUGE``, ``extraction_strength``, ``exact_memorization`` | all |

The ``mia`` and ``tofu`` rows say which tokens they scored (column ``protocol``,
`mechunlearn.verify.protocol`).

Without a retain model the floors, ``privleak`` and ``forget_quality`` are left out (logged).
A section (or an attack) that needs a field the target's data lacks is skipped, with the reason
in ``provenance["skipped"]`` and a log line (`section_needs`, `attack_needs`): probes need
``subject`` and ``attribute``, reintroduction ``context``, the TOFU section paraphrased and
perturbed answers, membership inference holdout items, the choice section ``choices``. The
``retain`` model is any model trained without the forget set: the shipped retain model of
bios-tiny, or the user's own (a Hugging Face folder or a GGUF file, `load_model`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Mapping

import numpy as np

import pandas as pd

from mechunlearn.core.edit import Edit
from mechunlearn.core.result import Result, provenance
from mechunlearn.models.activations import using
from mechunlearn.models.model import Model
from mechunlearn.verify.attacks import ATTACKS, AttackConfig, attack_needs, attack_suite
from mechunlearn.verify.behavior import behavior
from mechunlearn.verify.choice import choice_accuracy
from mechunlearn.verify.depth import DepthConfig, patching_depth
from mechunlearn.verify.verdict import VerdictConfig, verdicts
from mechunlearn.verify.mia import MIAConfig, membership_inference
from mechunlearn.verify.probes import ProbeConfig, probe_accuracy
from mechunlearn.verify.tofu import TofuConfig, tofu_metrics
from mechunlearn.verify.weight_traces import NoWeightChange, activation_shift, weight_traces

if TYPE_CHECKING:
    from mechunlearn.world.target import Target

log = logging.getLogger(__name__)

SECTIONS = ("behavior", "choice", "probes", "weights", "activations", "attacks", "mia", "tofu", "depth")
"""Sections of the card, in the order they run."""
DEFAULT_SECTIONS = SECTIONS[:-1]
"""What the card runs unless told: ``depth`` (patching depth against the oracle) is opt-in until its
cost on large models is measured (a forward per layer per batch)."""


@dataclass(frozen=True)
class CardConfig:
    """What the evaluation card runs, and each verifier's settings."""

    sections: tuple[str, ...] = DEFAULT_SECTIONS
    """Sections to run (drop some for a quicker card)."""
    probes: ProbeConfig = field(default_factory=ProbeConfig)
    """Linear-probe settings."""
    attacks: AttackConfig = field(default_factory=AttackConfig)
    """Attack settings."""
    attack_names: tuple[str, ...] = ATTACKS[:4]
    """Attacks to run (default: paraphrase, few-shot, reintroduction, relearning; the tamper
    suite's ``retain_finetune``, ``quantize`` and ``leak`` are opt-in until their card cost is measured)."""
    mia: MIAConfig = field(default_factory=MIAConfig)
    """Membership-inference settings."""
    depth: DepthConfig = field(default_factory=DepthConfig)
    """Patching-depth settings (section ``depth``)."""
    tofu: TofuConfig = field(default_factory=TofuConfig)
    """TOFU-style metric settings (needs paraphrased and perturbed answers)."""
    shift_position: str = "last"
    """Token position of the activation shift (``last`` or ``subject``)."""
    keep_scores: bool = True
    """Keep per-item scores (``mia_score`` rows, for ROC figures; ``tofu_item`` rows, for open-unlearning's ``value_by_index``)."""
    max_items: int | None = 1500
    """Retain and holdout items per split for the behaviour and activation sections (seeded subset; None: all)."""
    seed: int = 0
    """Seed of the item subsets."""
    method: str | None = None
    """Method label written in every row (default: the edit's label; with several edits, each role's name)."""
    run_id: str | None = None
    """Run identifier written in every row."""

    def __post_init__(self) -> None:
        bad = [s for s in self.sections if s not in SECTIONS]
        if bad:
            raise ValueError(f"unknown card sections {bad}; choose from {SECTIONS}")


def section_needs(section: str, target: "Target", config: "CardConfig", *, has_oracle: bool = True) -> str | None:
    """Why the card cannot run ``section`` on ``target`` (a field its data lacks, or no retain
    model where the section needs one), or None."""
    if target.kind == "corpus" and section not in ("weights",):
        return "the target has texts but no questions (a corpus)"
    if section == "choice" and target.kind != "choice":
        return "no multiple-choice items (question, choices, answer index)"
    if section == "probes" and not all(target.has(f, s) for f in ("subject", "attribute") for s in ("forget", "retain")):
        return "probes need a subject and an attribute on every forget and retain item (subject, attribute columns)"
    if section == "depth" and not has_oracle:
        return "patching depth needs the retain model (the oracle whose hidden states are patched in)"
    if section == "mia" and not target.holdout:
        return "membership inference needs holdout items (split: holdout, or a holdout file)"
    if section == "tofu":
        for split in ("forget", "retain"):
            trained = [it for it in target.split(split) if it.paraphrase == "trained"]
            if not trained or not all(it.paraphrased_answers and it.perturbed_answers for it in trained):
                return f"the truth ratio needs paraphrased and perturbed answers on every {split} item (paraphrased_answer, perturbed_answers columns)"
    if section == "attacks" and not any(attack_needs(target, a, config.attacks) is None for a in config.attack_names):
        return "no attack applies: " + "; ".join(f"{a}: {attack_needs(target, a, config.attacks)}" for a in config.attack_names)
    return None


def _subsample(target: "Target", limit: int | None, seed: int) -> "Target":
    """The target with each split cut to at most ``limit`` items (seeded; forget kept whole)."""
    if limit is None:
        return target
    rng = np.random.default_rng(seed)

    def cut(items: tuple) -> tuple:
        if len(items) <= limit:
            return items
        return tuple(items[i] for i in np.sort(rng.choice(len(items), limit, replace=False)))

    return replace(target, retain=cut(target.retain), holdout=cut(target.holdout))


def _roles(edited, original: Model | None) -> tuple[Model, dict[str, object]]:
    """(original model, {role: Model or (Model, Edit)}) for one edited model or several."""
    many = dict(edited) if isinstance(edited, Mapping) else {"edited": edited}
    if not many:
        raise ValueError("no edited model given")
    for name, subject in many.items():
        if name in ("original", "retain"):
            raise ValueError(f"an edited model cannot be called {name!r}: that role is reserved")
        if isinstance(subject, tuple):
            if len(subject) != 2 or not isinstance(subject[0], Model) or not isinstance(subject[1], Edit):
                raise TypeError(f"{name}: expected a (Model, Edit) pair, got {subject!r}")
            if original is None:
                original = subject[0]
        elif isinstance(subject, Model):
            if original is None:
                raise ValueError(f"{name} is an already-edited Model: pass its original model too (original=...)")
            if subject is original:
                raise ValueError(f"{name} and original are the same Model object; pass (model, edit) instead")
        else:
            raise TypeError(f"{name}: expected a Model or a (Model, Edit) pair, got {type(subject).__name__}")
    return original, many


def evaluation_card(
    edited,
    original: Model | None,
    retain: Model | None,
    target: "Target",
    config: CardConfig = CardConfig(),
) -> Result:
    """Run the whole verification suite; one `Result` with ``section`` and ``model`` columns.

    ``edited`` is a `Model` (already edited), a ``(model, edit)`` pair (the edit is applied only
    while that role is scored), or a mapping ``{name: model or (model, edit)}`` to score several
    edits side by side (each name becomes a ``model`` role; original and retain are scored once).
    ``original`` is the unedited model (``None``: the model of the pairs, without the edits).
    ``retain`` is the model trained without the forget set (the reference for floors,
    ``privleak`` and ``forget_quality``): the built-in retain model or the user's own. A section
    the target's data cannot feed is skipped (module doc).
    """
    original, edits = _roles(edited, original)
    models: dict[str, object] = {"original": original, **edits}
    if retain is not None:
        models["retain"] = retain
    else:
        log.warning("no retain model: probe floors, privleak and forget_quality are left out of the card")
    method = config.method or (_label(next(iter(edits.values()))) if len(edits) == 1 else "several")
    common = {"method": method, "run_id": config.run_id}
    small = _subsample(target, config.max_items, config.seed)
    parts: list[pd.DataFrame] = []
    timings: dict[str, float] = {}
    skipped: dict[str, str] = {}

    def add(section: str, result: Result) -> None:
        frame = result.frame.copy()
        frame["section"] = section
        parts.append(frame)

    for section in config.sections:
        start = time.perf_counter()
        why = section_needs(section, target, config, has_oracle=retain is not None)
        if why is not None:
            log.warning("evaluation card: %s skipped on %s: %s", section, target.name, why)
            skipped[section] = why
            continue
        log.info("evaluation card: %s", section)
        if section == "behavior":
            for role, subject in models.items():
                with using(subject) as m:
                    frame = behavior(m, small, **common).frame
                frame["model"] = role
                add(section, Result(frame))
        elif section == "choice":
            add(section, choice_accuracy(models, small, batch_size=config.tofu.batch_size, **common))
        elif section == "probes":
            add(section, probe_accuracy(models, target, config.probes, **common))
        elif section in ("weights", "activations"):
            for role, subject in edits.items():
                if section == "activations":
                    result = activation_shift(original, subject, small, position=config.shift_position, **common)
                elif isinstance(subject, Model):
                    result = weight_traces(original, after=subject, **common)
                else:
                    try:
                        result = weight_traces(original, subject[1], **common)
                    except NoWeightChange as why:
                        log.info("weights section: %s skipped: %s", role, why)
                        skipped[f"weights:{role}"] = str(why)
                        continue
                frame = result.frame
                frame["model"] = role
                add(section, Result(frame))
        elif section == "attacks":
            names = []
            for name in config.attack_names:
                why = attack_needs(target, name, config.attacks)
                if why is None:
                    names.append(name)
                else:
                    log.warning("evaluation card: attack %s skipped on %s: %s", name, target.name, why)
                    skipped[f"attacks:{name}"] = why
            add(section, attack_suite(models, target, config.attacks, attacks=names, **common))
        elif section == "mia":
            add(section, membership_inference(models, target, config.mia, keep_scores=config.keep_scores, **common))
        elif section == "tofu":
            add(section, tofu_metrics(models, target, config.tofu, keep_items=config.keep_scores, **common))
        elif section == "depth":
            add(section, patching_depth(models, target, config.depth, **common))
        timings[section] = time.perf_counter() - start
    if not parts:
        raise ValueError(f"no card section could run on {target.name!r}: {skipped}")
    frame = pd.concat(parts, ignore_index=True)
    frame["run_id"] = config.run_id
    if len(edits) > 1:  # several edits: the method column names each role's edit
        frame["method"] = frame["model"].map({r: r for r in edits}).fillna(frame["model"])
    prov = provenance(original.model_id, config, target=target.name, edits={r: repr(_label(s)) for r, s in edits.items()}, seconds=timings, skipped=skipped)
    return Result(frame, prov)


def _label(subject) -> str:
    if isinstance(subject, tuple):
        return getattr(subject[1], "label", None) or type(subject[1]).__name__
    return "edited"


HEADLINE = (
    ("behavior", "exact_match", "forget"),
    ("behavior", "exact_match", "retain"),
    ("tofu", "forget_quality", "forget"),
    ("tofu", "forget_truth_ratio", "forget"),
    ("tofu", "retain_utility", "retain"),
    ("mia", "mia_min_k", "forget_vs_holdout"),
    ("mia", "privleak", "forget_vs_holdout"),
)


SUMMARY_METRICS = (*dict.fromkeys(m for _, m, _ in HEADLINE), "probe_acc", "attack_exact_match", "depth_score", "relearn_exact_match")
"""The metrics `card_summary` reads (a study report reads only these of the card's rows)."""


def card_summary(card: Result) -> pd.DataFrame:
    """One row per model role with the headline numbers: forget / retain exact match, TOFU
    metrics, MIA, forget probe accuracy at the best layer and token position (refit; per attribute, then
    averaged: bios-tiny reads attributes out at the question's last token, other models may at
    the subject's), paraphrase, few-shot,
    two-hop reintroduction and relearning recovery on the unseen half, patching depth. Its rows
    are what `mechunlearn.verify.verdict.verdicts` judges (`card_verdicts`)."""
    f = card.frame
    out: dict[str, dict[str, float]] = {}

    def put(role: str, name: str, value: float) -> None:
        out.setdefault(role, {})[name] = value

    for section, metric, split in HEADLINE:
        sub = f[(f["section"] == section) & (f["metric"] == metric) & (f["split"] == split)]
        for role, value in sub.groupby("model")["value"].mean().items():
            put(role, f"{metric}:{split}" if section == "behavior" else metric, value)
    probes = f[(f["metric"] == "probe_acc") & (f["split"] == "forget") & (f["reading"] == "refit")] if "reading" in f else f.iloc[0:0]
    if not probes.empty:
        best = probes.groupby(["model", "attribute"])["value"].max().groupby("model").mean()
        for role, value in best.items():
            put(role, "probe_forget_best", value)
    attacks = f[f["metric"] == "attack_exact_match"] if "attack" in f else f.iloc[0:0].assign(attack=None)
    for (role, attack, split), value in attacks[attacks.get("context", pd.Series(True, index=attacks.index)).fillna(True).astype(bool)].groupby(["model", "attack", "split"])["value"].mean().items():
        if split == "forget":
            put(role, f"{attack}_em", value)
    for role, value in f[f["metric"] == "depth_score"].groupby("model")["value"].mean().items():
        put(role, "depth_score", value)
    relearn = f[(f["metric"] == "relearn_exact_match") & (f["half"] == "other")] if "half" in f else f.iloc[0:0]
    if not relearn.empty:
        last = relearn[relearn["step"] == relearn["step"].max()]
        for role, value in last.groupby("model")["value"].mean().items():
            put(role, "relearn_other_half_em", value)
    return pd.DataFrame(out).T


def card_verdicts(card: Result, config: VerdictConfig | None = None) -> pd.DataFrame:
    """The verdict per edited role of ``card`` (`mechunlearn.verify.verdict`): removed, hidden,
    not forgotten or inconclusive, with the evidence."""
    return verdicts(card_summary(card), config or VerdictConfig())
