"""Measuring the verifiers themselves: faithfulness and robustness against the exact-unlearning
oracle (issue 15 §3), the meta-evaluation protocol of OpenUnlearning (Dorna et al., arXiv
2506.12618, §4 "Meta-evaluating unlearning metrics").

>>> pop = build_population(model, retain, target, PopulationConfig())
>>> scores = score_population(pop, target)            # member × verifier
>>> table = meta_table(scores, pop.frame)             # verifier × (faithfulness, robustness, …)
>>> figures.meta.faithfulness_robustness(table)

**A population with known knowledge status** (`Population`, `build_population`). bios-tiny gives
the ground truth for free: the retain model never saw the forget people. Every member is a
``(base model, DeltaEdit)`` pair (or a base model itself), so the population costs a few weight
deltas of a tiny model:

| member                         | status      | what                                                       |
| ------------------------------ | ----------- | ---------------------------------------------------------- |
| ``original``                   | positive    | trained on the forget people                               |
| ``original~ft<lr>``            | positive    | + a few fine-tuning steps on retain questions (perturbed)  |
| ``original~int4``              | positive    | int4-quantized (`attacks.quantized`)                       |
| ``retain``                     | negative    | the oracle: never trained on the forget people             |
| ``retain~ft<lr>``              | negative    | + a few fine-tuning steps on retain questions (perturbed)  |
| ``retain~int4``                | negative    | int4-quantized                                             |
| ``<method>`` (GA, NPO × 2)     | unlearned   | the models under test; status unknown                      |
| ``<method>~relearn``           | positive    | fine-tuned on the forget questions: knowledge back         |
| ``<method>~int4``              | attacked    | the unlearned model int4-quantized (robustness only)       |
| ``retain~relearn``             | reference   | the oracle given the same relearning (robustness only)     |

Positives are the models trained on the forget data that provably hold it; negatives the models
that never saw it (the paper's P and N pools, §4.1, there models trained with and without the
forget set under several hyper-parameters). The defaults (`PopulationConfig`) build 21 members
(8 positive, 4 negative, 4 unlearned, 4 attacked, 1 reference) as 19 weight deltas of the base
models: 30 s on the small world (40 people), 92 s on the default one, 2 CPU cores. Scoring them
with every verifier takes 184 s on the small world (probes 103 s of it); on the default world
130 s without the probes, which alone take 531 s (~25 s a member; see **Measured** below).

**Verifiers** (`VERIFIERS`): each maps a model (``Model`` or ``(Model, Edit)``) to one number,
higher = more forget knowledge present, reading the workbench's own verifiers (the evaluation
card's summary columns, `card.card_summary`, where the card has one).

**Faithfulness** (2506.12618 §4.1, "Faithfulness"): the AUC-ROC of the verifier's score at
separating the positive members from the negative ones (`localization.auroc`, ties half).

**Robustness** (2506.12618 §4.1, Eq. 2–4), on every unlearned member u, with m_b / m_a the
verifier's score before / after the attack:

* relearning (Eq. 2): ``R_u = min((m_a(retain~relearn) − m_b(retain)) / (m_a(u~relearn) − m_b(u)), 1)``
  — the unlearned model should gain no more under the same relearning than the oracle, which
  learns the facts from scratch. Edge cases (`relearn_robustness`): R = 1 where the unlearned
  model gains no more than the oracle (a zero or negative denominator included), clipped to
  [0, 1] (an oracle that loses while the unlearned model gains gives 0).
* quantization (Eq. 3): ``Q_u = min(m_b(u) / m_a(u~int4), 1)`` — quantization should not raise
  the score (`quant_robustness`; 1 where the score after is ≤ the score before, clipped at 0).
  The paper's Q has no oracle term; ``quant_robustness_vs_retain`` is Eq. 2's form with the
  int4 changes of u and of the retain model (retain~int4), reported beside it.
* ``R`` and ``Q`` are means over the unlearned members (optionally, as the paper's §4.2.1,
  only those the verifier itself scores below its accuracy-optimal P/N threshold:
  ``filter_insufficient``); ``robustness = HM(R, Q) = 2RQ / (R + Q)`` (Eq. 4; 0 when either is 0).

Which direction "higher" is matters for R and Q (ratios), not for the AUC: every verifier is
oriented so that higher means more knowledge (truth ratio as open-unlearning's meta-evaluation
reads it, p_true / (p_true + p_false), ``src/evals/metrics/memorization.py:122`` at d3d7cf9;
patching depth as 1 − ``depth_score``).

**Measured** (float32, 2 CPU cores, the 10% split; ``python -m mechunlearn.verify.meta --world
small --out DIR``, wall 216 s; R, Q averaged over the 4 unlearned models, no filter):

| verifier              | faithfulness | R (relearn) | Q (int4) | robustness HM(R, Q) | Q vs retain |
| --------------------- | ------------ | ----------- | -------- | ------------------- | ----------- |
| forget_em             | 1.000        | 0.793       | 0.989    | 0.880               | 0.500       |
| forget_prob           | 1.000        | 0.744       | 0.987    | 0.849               | 0.554       |
| truth_ratio           | **0.000**    | 0.500       | 0.997    | 0.666               | 0.750       |
| probe_forget_best     | 1.000        | 0.818       | 1.000    | 0.900               | 1.000       |
| relearn_other_half_em | 1.000        | 0.784       | 0.962    | 0.864               | 0.250       |
| quantize_int4_em      | 1.000        | 0.779       | 1.000    | 0.876               | 1.000       |
| depth_knowledge       | 1.000        | 1.000       | 0.980    | 0.990               | 0.563       |
| mia_min_k             | 1.000        | 1.000       | 0.999    | 0.999               | 1.000       |

Default world (``--world default``: every verifier but the probes, wall 224 s, population 92 s;
``--verifiers probe_forget_best`` alone, wall 620 s, the probes 531 s):

| verifier              | faithfulness | R     | Q     | robustness | Q vs retain |
| --------------------- | ------------ | ----- | ----- | ---------- | ----------- |
| forget_em             | 1.000        | 0.419 | 0.816 | 0.553      | 0.250       |
| forget_prob           | 1.000        | 0.422 | 0.945 | 0.584      | 0.831       |
| truth_ratio           | 1.000        | 1.000 | 0.997 | 0.998      | 0.500       |
| relearn_other_half_em | 1.000        | 0.701 | 0.978 | 0.817      | 0.577       |
| quantize_int4_em      | 1.000        | 0.421 | 1.000 | 0.593      | 1.000       |
| depth_knowledge       | 1.000        | 0.713 | 0.941 | 0.812      | 1.000       |
| mia_min_k             | 1.000        | 0.993 | 1.000 | 0.997      | 1.000       |
| probe_forget_best     | 1.000        | 0.330 | 1.000 | 0.496      | 1.000       |

With the paper's filter (``--filter-insufficient``: R, Q over the unlearned models each
verifier scores below its accuracy-optimal P/N threshold), default world: forget_em R 0.212 /
robustness 0.321 (2 models), forget_prob 0.227 / 0.362 (2), quantize_int4_em 0.228 / 0.372 (3),
depth_knowledge 0.427 / 0.578 (2); relearn_other_half_em, probe_forget_best, mia_min_k and truth_ratio call none
of the four unlearned models unlearned (relearning the other half brings GA-strong and
NPO-strong back to 0.59 / 0.57 against the oracle's 0.03), so their robustness is undefined.

Reading them: (1) faithfulness saturates — the positives (original and its perturbed, quantized
and relearned copies) and the negatives (the oracle and its copies) sit far apart on every
verifier but the small world's truth ratio, which ranks every negative *above* every positive
(its paraphrased answers use other sentence templates than its perturbed ones, so on 40 people it
reads template preference: 0.70 original vs 0.75 oracle; on the default world it separates). A
harder negative pool (oracles trained with other seeds) is what would make the AUC discriminate.
(2) Robustness does discriminate: under the same 10 relearning steps the oracle gains on average
only 0.42 of what the unlearned models gain on the behaviour scores (exact match, probability,
int4 exact match; default world), 0.33 on the refit probes (whose forget accuracy GA / NPO left
at 0.42–0.83 against the oracle's 0.10), 0.7 on patching depth and the other-half relearning score. (3) int4
round-to-nearest undoes none of these GA / NPO edits (Q ≈ 1; forget_em's 0.82 is 0.002 → 0.005
on NPO-strong: ratios of near-zero scores are noisy). (4) A verifier that never moves scores
R = Q = 1 whatever the knowledge does: Min-K% stays at 0.85–1.0 on every unlearned model (and
with ``filter_insufficient``, 2506.12618 §4.2.1, none of them counts as unlearned by it, so its
robustness is undefined) — robustness is only meaningful beside faithfulness on hard pools.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from mechunlearn.core.edit import DeltaEdit
from mechunlearn.core.registry import Registry
from mechunlearn.core.result import Result
from mechunlearn.data.target import seeded_subset
from mechunlearn.models.activations import using
from mechunlearn.models.model import Model
from mechunlearn.unlearn.unlearner import UnlearnConfig, unlearn
from mechunlearn.verify.attacks import AttackConfig, finetune_curve, quantization_attack, quantized, relearning_attack
from mechunlearn.verify.behavior import score_items
from mechunlearn.verify.card import card_summary
from mechunlearn.verify.depth import DepthConfig, patching_depth
from mechunlearn.verify.localization import auroc
from mechunlearn.verify.mia import MIAConfig, membership_inference
from mechunlearn.verify.probes import ProbeConfig, probe_accuracy
from mechunlearn.verify.protocol import protocol_for
from mechunlearn.verify.tofu import TofuConfig, truth_items, truth_ratios

if TYPE_CHECKING:
    from mechunlearn.world.target import Target

log = logging.getLogger(__name__)

STATUSES = ("positive", "negative", "unlearned", "attacked", "reference")
"""Knowledge status of a member: holds the forget knowledge (positive), never had it (negative),
under test (unlearned), an attacked unlearned model, or the oracle under an attack (reference)."""


def _ga(steps: int, stop: float | None) -> UnlearnConfig:
    return UnlearnConfig(loss="ga", steps=steps, lr=2e-5, batch_size=32, stop_forget_em=stop, stop_every=5, loss_options={"retain_weight": 1.0})


def _npo(steps: int, stop: float | None) -> UnlearnConfig:
    return UnlearnConfig(loss="npo", steps=steps, lr=1e-4, batch_size=32, stop_forget_em=stop, stop_every=5)


DEFAULT_METHODS: tuple[tuple[str, UnlearnConfig], ...] = (
    ("ga_weak", _ga(30, None)),
    ("ga_strong", _ga(300, 0.1)),
    ("npo_weak", _npo(10, None)),
    ("npo_strong", _npo(60, 0.05)),
)
"""GA (retain-regularised, as the card test's) and NPO, each at a weak strength (a fixed small
step budget: partly forgotten) and a strong one (until forget exact match ≤ 0.1 / 0.05)."""


@dataclass(frozen=True)
class PopulationConfig:
    """Sizes of the meta-evaluation population (module doc): 2 + 2·len(perturb_lrs) + 2 base
    members, and 3 per method, plus the oracle's relearned copy."""

    methods: tuple[tuple[str, UnlearnConfig], ...] = DEFAULT_METHODS
    """(label, unlearning run) of every unlearned member."""
    perturb_lrs: tuple[float, ...] = (1e-4, 3e-4)
    """Learning rates of the retain-question fine-tunes of the original and the oracle (one
    perturbed positive and one perturbed negative each)."""
    perturb_steps: int = 10
    """Steps of those fine-tunes."""
    relearn_steps: int = 10
    """Fine-tuning steps on the forget questions of every relearned member (the oracle gets the same)."""
    relearn_lr: float = 1e-4
    """Their learning rate (AdamW, constant; the card's relearning attack's)."""
    relearn_weights: str = "no_embed"
    """Weight family fine-tuned (relearning and perturbations)."""
    quant_bits: int = 4
    """Bit width of the quantized members (round-to-nearest per output channel)."""
    seed: int = 0
    """Seed of the fine-tunes' batches."""

    def __post_init__(self) -> None:
        labels = [label for label, _ in self.methods]
        if len(set(labels)) != len(labels) or any("~" in label for label in labels):
            raise ValueError(f"method labels must be unique and free of '~', got {labels}")
        if self.perturb_steps < 1 or self.relearn_steps < 1:
            raise ValueError("perturb_steps and relearn_steps must be >= 1")
        if not 2 <= self.quant_bits <= 16:
            raise ValueError(f"quant_bits must be in [2, 16], got {self.quant_bits}")


@dataclass
class Population:
    """Models with known knowledge status; ``subjects[name]`` is a `Model` or ``(Model, DeltaEdit)``
    pair, ``frame`` one row per member (``status``, ``parent``, ``transform``, ``base``)."""

    subjects: dict[str, object]
    frame: pd.DataFrame
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.subjects)

    def names(self, status: str) -> list[str]:
        """Members of one status."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; choose from {STATUSES}")
        return list(self.frame.index[self.frame["status"] == status])


def _base_weights(model: Model) -> dict[str, torch.Tensor]:
    return {n: model.weight(n).detach().clone() for n in model.weight_names("all")}


def _delta_edit(model: Model, base: Mapping[str, torch.Tensor], label: str, values: Mapping[str, torch.Tensor] | None = None) -> DeltaEdit:
    """The `DeltaEdit` from ``base`` to the model's current weights (or to ``values`` over them)."""
    deltas = {}
    for name, before in base.items():
        now = values[name] if values is not None and name in values else model.weight(name).detach()
        if not torch.equal(now, before):
            deltas[name] = (now - before).clone()
    if not deltas:
        raise ValueError(f"population member {label!r} has the same weights as its base model")
    return DeltaEdit(deltas, label=label)


def build_population(original: Model, retain: Model, target: "Target", config: PopulationConfig = PopulationConfig(), *, progress: bool = True) -> Population:
    """Build the population of the module doc; both base models are left bit for bit as they were."""
    if original is retain:
        raise ValueError("original and retain must be different models (the retain model never saw the forget set)")
    start = time.perf_counter()
    hashes = (original.weights_hash(), retain.weights_hash())
    attack = AttackConfig(seed=config.seed)
    forget = [it for it in target.forget if it.paraphrase == attack.paraphrase]
    retain_items = [it for it in target.retain if it.paraphrase == attack.paraphrase]
    if not forget or not retain_items:
        raise ValueError(f"target {target.name!r} needs forget and retain items with paraphrase={attack.paraphrase!r}")
    bases = {"original": (original, _base_weights(original)), "retain": (retain, _base_weights(retain))}
    subjects: dict[str, object] = {"original": original, "retain": retain}
    rows = [
        {"member": "original", "status": "positive", "parent": None, "transform": "none", "base": "original"},
        {"member": "retain", "status": "negative", "parent": None, "transform": "none", "base": "retain"},
    ]

    def finetune(subject, items, lr: float, steps: int, label: str, base_name: str) -> DeltaEdit:
        kept: dict[str, torch.Tensor] = {}
        with using(subject) as m:
            finetune_curve(m, items, {}, attack, steps=steps, lr=lr, weights=config.relearn_weights, desc=label, keep=kept)
            return _delta_edit(m, bases[base_name][1], label, kept)

    def quantize(subject, label: str, base_name: str) -> DeltaEdit:
        with using(subject) as m, quantized(m, config.quant_bits):
            return _delta_edit(m, bases[base_name][1], label)

    def add(name: str, status: str, parent: str | None, transform: str, base_name: str, edit: DeltaEdit) -> None:
        subjects[name] = (bases[base_name][0], edit)
        rows.append({"member": name, "status": status, "parent": parent, "transform": transform, "base": base_name})

    steps = [("perturb", b, lr) for b in ("original", "retain") for lr in config.perturb_lrs]
    steps += [("int4", b, None) for b in ("original", "retain")]
    steps += [("relearn", "retain", None)]
    steps += [("unlearn", label, cfg) for label, cfg in config.methods]
    q = f"int{config.quant_bits}"
    for kind, name, arg in tqdm(steps, desc="meta-evaluation population", disable=not progress):
        if kind == "perturb":
            status = "positive" if name == "original" else "negative"
            add(f"{name}~ft{arg:g}", status, name, "retain_ft", name, finetune(subjects[name], retain_items, arg, config.perturb_steps, f"{name}~ft{arg:g}", name))
        elif kind == "int4":
            status = "positive" if name == "original" else "negative"
            add(f"{name}~{q}", status, name, "quantize", name, quantize(subjects[name], f"{name}~{q}", name))
        elif kind == "relearn":
            add("retain~relearn", "reference", "retain", "relearn", "retain", finetune(retain, forget, config.relearn_lr, config.relearn_steps, "retain~relearn", "retain"))
        else:
            edit = unlearn(original, target.where(paraphrase=attack.paraphrase), arg)
            edit = replace(edit, label=name)
            add(name, "unlearned", None, "unlearn", "original", edit)
            add(f"{name}~relearn", "positive", name, "relearn", "original", finetune((original, edit), forget, config.relearn_lr, config.relearn_steps, f"{name}~relearn", "original"))
            add(f"{name}~{q}", "attacked", name, "quantize", "original", quantize((original, edit), f"{name}~{q}", "original"))
    if (original.weights_hash(), retain.weights_hash()) != hashes:
        raise RuntimeError("building the population changed a base model's weights")
    frame = pd.DataFrame(rows).set_index("member")
    return Population(subjects, frame, time.perf_counter() - start)


# --------------------------------------------------------------------------- verifiers


@dataclass(frozen=True)
class MetaConfig:
    """Settings of the verifiers the meta-evaluation scores (small defaults: every member is scored)."""

    attacks: AttackConfig = field(default_factory=lambda: AttackConfig(max_items=240, relearn_steps=10, relearn_eval_every=10))
    """The card's relearning (other half) and quantization attacks, as verifiers."""
    probes: ProbeConfig = field(default_factory=lambda: ProbeConfig(templates_per_fact=None, positions=("question",)))
    """Refit probes at the question's last token (where bios-tiny reads attributes out)."""
    mia: MIAConfig = field(default_factory=lambda: MIAConfig(attacks=("min_k",), max_items=300))
    """Membership inference (Min-K%, forget vs holdout)."""
    tofu: TofuConfig = field(default_factory=TofuConfig)
    """Truth-ratio settings (template, protocol, batch size)."""
    depth: DepthConfig = field(default_factory=lambda: DepthConfig(max_items=120))
    """Patching depth against the oracle."""
    max_items: int | None = 600
    """Forget items the behaviour verifiers score (seeded subset; None: all)."""
    seed: int = 0


@dataclass(frozen=True)
class MetaContext:
    """What a verifier may read besides the model: the target, the reference models, the settings."""

    target: "Target"
    original: Model
    retain: Model
    config: MetaConfig = MetaConfig()

    def forget_items(self) -> list:
        items = [it for it in self.target.forget if it.paraphrase == self.config.attacks.paraphrase]
        return seeded_subset(items, self.config.max_items, self.config.seed)


Verifier = Callable[[object, MetaContext], float]
"""``verifier(subject, context) -> score``, higher = more forget knowledge present."""

VERIFIERS: Registry[Verifier] = Registry("verifier")
"""The verifiers the meta-evaluation scores, by name (`score_population`'s default: all)."""


def _summary(frame: pd.DataFrame, section: str, column: str) -> float:
    """The card summary's ``column`` for role ``member`` of one section's rows (the card's reading)."""
    frame = frame.copy()
    frame["section"] = section
    summary = card_summary(Result(frame))
    if "member" not in summary.index or column not in summary.columns:
        raise ValueError(f"the {section} rows give no {column!r} for the member (columns {list(summary.columns)})")
    return float(summary.loc["member", column])


@VERIFIERS.register("forget_em")
def forget_em(subject, ctx: MetaContext) -> float:
    """Greedy exact match on forget questions (`behavior.score_items`; the card's ``exact_match:forget``)."""
    with using(subject) as m:
        return float(score_items(m, ctx.forget_items(), progress=False)["exact_match"].mean())


@VERIFIERS.register("forget_prob")
def forget_prob(subject, ctx: MetaContext) -> float:
    """Length-normalised answer probability on forget questions (``answer_prob_norm``; TOFU's Q_A_Prob)."""
    with using(subject) as m:
        return float(score_items(m, ctx.forget_items(), progress=False)["answer_prob_norm"].mean())


@VERIFIERS.register("truth_ratio")
def truth_ratio_knowledge(subject, ctx: MetaContext) -> float:
    """Mean over forget items of p_true / (p_true + p_false) = 1 / (1 + R), R the TOFU truth
    ratio (`tofu.truth_ratios`): open-unlearning's "extent of knowledge" aggregator (``prob_mean``,
    ``src/evals/metrics/memorization.py:122``), the one its meta-evaluation reads."""
    items = truth_items(ctx.target.forget, template=ctx.config.tofu.template)
    r = truth_ratios(subject, items, batch_size=ctx.config.tofu.batch_size, eos=protocol_for(ctx.target, ctx.config.tofu.protocol).eos)
    return float(np.mean(1.0 / (1.0 + r)))


@VERIFIERS.register("probe_forget_best")
def probe_forget_best(subject, ctx: MetaContext) -> float:
    """Refit linear-probe accuracy on forget people at the best layer (per attribute, averaged;
    the card's ``probe_forget_best``)."""
    frame = probe_accuracy({"member": subject}, ctx.target, ctx.config.probes, reference=None, progress=False).frame
    return _summary(frame, "probes", "probe_forget_best")


@VERIFIERS.register("relearn_other_half_em")
def relearn_other_half_em(subject, ctx: MetaContext) -> float:
    """Forget exact match on the unseen half after relearning the other half of the forget
    people (`attacks.relearning_attack`; the card's ``relearn_other_half_em``)."""
    rows = relearning_attack(subject, ctx.target, ctx.config.attacks)
    return _summary(pd.DataFrame(rows).assign(model="member"), "attacks", "relearn_other_half_em")


@VERIFIERS.register("quantize_int4_em")
def quantize_int4_em(subject, ctx: MetaContext) -> float:
    """Forget exact match after int4 round-to-nearest quantization (`attacks.quantization_attack`;
    the card's ``quantize_int4_em``)."""
    rows = quantization_attack(subject, ctx.target, replace(ctx.config.attacks, quant_bits=(4,)))
    return _summary(pd.DataFrame(rows).assign(model="member"), "attacks", "quantize_int4_em")


@VERIFIERS.register("depth_knowledge")
def depth_knowledge(subject, ctx: MetaContext) -> float:
    """1 − ``depth_score`` (`depth.patching_depth` against the oracle): the share of the
    original's forget knowledge the member's hidden states still carry."""
    frame = patching_depth({"original": ctx.original, "retain": ctx.retain, "member": subject}, ctx.target, ctx.config.depth).frame
    return 1.0 - _summary(frame, "depth", "depth_score")


@VERIFIERS.register("mia_min_k")
def mia_min_k(subject, ctx: MetaContext) -> float:
    """Min-K% membership-inference AUC, forget vs holdout (`mia.membership_inference`). PrivLeak
    is this AUC affinely rescaled by the oracle's, so its faithfulness is the same and it is not
    scored twice."""
    frame = membership_inference({"member": subject}, ctx.target, ctx.config.mia, retain_role=None, progress=False).frame
    return _summary(frame, "mia", "mia_min_k")


def score_population(
    population: Population,
    target: "Target",
    verifiers: Sequence[str] | Mapping[str, Verifier] | None = None,
    config: MetaConfig = MetaConfig(),
    *,
    original: str = "original",
    retain: str = "retain",
    progress: bool = True,
) -> pd.DataFrame:
    """Every verifier's score on every member: a DataFrame member × verifier (``attrs["seconds"]``:
    each verifier's total time). ``verifiers``: registered names (default: all of `VERIFIERS`) or
    a mapping name → function."""
    if verifiers is None:
        verifiers = list(VERIFIERS)
    fns = dict(verifiers) if isinstance(verifiers, Mapping) else {name: VERIFIERS.get(name) for name in verifiers}
    if not fns:
        raise ValueError("no verifiers to score")
    for role in (original, retain):
        if not isinstance(population.subjects.get(role), Model):
            raise ValueError(f"the population needs its {role!r} member as a plain Model (the reference of some verifiers)")
    ctx = MetaContext(target, population.subjects[original], population.subjects[retain], config)
    out = pd.DataFrame(index=pd.Index(list(population.subjects), name="member"), columns=list(fns), dtype=float)
    seconds = dict.fromkeys(fns, 0.0)
    bar = tqdm(total=len(fns) * len(population.subjects), desc="meta-evaluation scores", disable=not progress)
    for name, fn in fns.items():
        for member, subject in population.subjects.items():
            start = time.perf_counter()
            out.loc[member, name] = float(fn(subject, ctx))
            seconds[name] += time.perf_counter() - start
            bar.update()
    bar.close()
    out.attrs["seconds"] = seconds
    return out


# --------------------------------------------------------------------------- meta-metrics


def relearn_robustness(unl_before, unl_after, ret_before, ret_after) -> np.ndarray | float:
    """2506.12618 Eq. 2: ``min(Δ_retain / Δ_unlearned, 1)`` with Δ = score after − score before the
    same attack, elementwise. 1 where the unlearned model's score rises no more than the
    oracle's, or does not rise (Δ_unlearned ≤ max(Δ_retain, 0), a zero denominator included);
    otherwise Δ_retain / Δ_unlearned clipped at 0 (an oracle that loses while the unlearned
    model gains gives 0)."""
    d_unl = np.asarray(unl_after, dtype=float) - np.asarray(unl_before, dtype=float)
    d_ret = np.asarray(ret_after, dtype=float) - np.asarray(ret_before, dtype=float)
    d_ret = np.broadcast_to(d_ret, d_unl.shape) if d_unl.ndim else d_ret
    rises = d_unl > np.maximum(d_ret, 0.0)
    out = np.where(rises, np.clip(d_ret / np.where(rises, d_unl, 1.0), 0.0, 1.0), 1.0)
    return float(out) if out.ndim == 0 else out


def quant_robustness(before, after) -> np.ndarray | float:
    """2506.12618 Eq. 3: ``min(m_before / m_after, 1)`` of the unlearned model's score under
    quantization; 1 where the score does not rise, clipped at 0. Elementwise; scores ≥ 0."""
    b, a = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if (b < 0).any() or (a < 0).any():
        raise ValueError("quantization robustness is a ratio of scores: they must be >= 0")
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(a > b, b / np.where(a > 0, a, 1.0), 1.0)
    out = np.clip(out, 0.0, 1.0)
    return float(out) if out.ndim == 0 else out


def harmonic_mean(a: float, b: float) -> float:
    """2506.12618 Eq. 4: 2ab / (a + b), 0 when either is 0 (NaN if either is)."""
    if np.isnan(a) or np.isnan(b):
        return float("nan")
    return 0.0 if a <= 0 or b <= 0 else float(2 * a * b / (a + b))


def faithfulness(scores: pd.Series, status: pd.Series) -> float:
    """2506.12618 §4.1: AUC-ROC of ``scores`` separating the ``positive`` members from the
    ``negative`` ones (`localization.auroc`; other statuses are left out)."""
    status = status.reindex(scores.index)
    keep = status.isin(["positive", "negative"])
    counts = status[keep].value_counts()
    if counts.get("positive", 0) == 0 or counts.get("negative", 0) == 0:
        raise ValueError(f"faithfulness needs at least one positive and one negative member, got {counts.to_dict()}")
    if scores[keep].isna().any():
        raise ValueError(f"{scores.name or 'the verifier'} has no score for {list(scores[keep].index[scores[keep].isna()])}")
    return auroc(scores[keep].to_numpy(), (status[keep] == "positive").to_numpy())


def accuracy_threshold(scores: pd.Series, status: pd.Series) -> float:
    """The midpoint threshold that classifies positive (score ≥ t) vs negative members most
    accurately (the paper's §4.2.1 filter; the lowest such threshold on ties)."""
    keep = status.reindex(scores.index).isin(["positive", "negative"])
    values, pos = scores[keep].to_numpy(float), (status.reindex(scores.index)[keep] == "positive").to_numpy()
    grid = np.unique(values)
    cuts = np.concatenate([[grid[0] - 1.0], (grid[:-1] + grid[1:]) / 2, [grid[-1] + 1.0]])
    accuracy = [((values >= t) == pos).mean() for t in cuts]
    return float(cuts[int(np.argmax(accuracy))])


def _child(members: pd.DataFrame, parent: str, transform: str) -> str | None:
    hit = members.index[(members["parent"] == parent) & (members["transform"] == transform)]
    return hit[0] if len(hit) else None


def meta_table(scores: pd.DataFrame, members: pd.DataFrame, *, filter_insufficient: bool = False, retain: str = "retain") -> pd.DataFrame:
    """One row per verifier: ``faithfulness``, ``relearn_robustness`` (R), ``quant_robustness``
    (Q), ``robustness`` = HM(R, Q), ``quant_robustness_vs_retain``, and the members they read
    (``n_positive``, ``n_negative``, ``n_unlearned``: the unlearned members R and Q average over).

    ``members``: `Population.frame` (``status``, ``parent``, ``transform``); every unlearned
    member needs a ``relearn`` and a ``quantize`` child, and ``retain`` both too. With
    ``filter_insufficient``, R and Q average only over the unlearned members the verifier scores
    below its `accuracy_threshold` (2506.12618 §4.2.1)."""
    missing = [c for c in ("status", "parent", "transform") if c not in members.columns]
    if missing:
        raise ValueError(f"members needs the columns {missing}")
    unknown = sorted(set(members["status"]) - set(STATUSES))
    if unknown:
        raise ValueError(f"unknown member statuses {unknown}; choose from {STATUSES}")
    status = members["status"]
    unlearned = list(members.index[status == "unlearned"])
    ret_relearn, ret_quant = _child(members, retain, "relearn"), _child(members, retain, "quantize")
    if unlearned and (ret_relearn is None or ret_quant is None):
        raise ValueError(f"robustness needs the {retain!r} member's relearned and quantized copies (transform relearn / quantize)")
    pairs = []
    for u in unlearned:
        r, q = _child(members, u, "relearn"), _child(members, u, "quantize")
        if r is None or q is None:
            raise ValueError(f"unlearned member {u!r} needs a relearned and a quantized copy")
        pairs.append((u, r, q))
    rows = {}
    for name in scores.columns:
        s = scores[name].astype(float)
        row = {"faithfulness": faithfulness(s, status), "n_positive": int((status == "positive").sum()), "n_negative": int((status == "negative").sum())}
        use = pairs
        if filter_insufficient and pairs:
            cut = accuracy_threshold(s, status)
            use = [p for p in pairs if s[p[0]] < cut]
        if use:
            u, r, q = (list(x) for x in zip(*use))
            row["relearn_robustness"] = float(np.mean(relearn_robustness(s[u].to_numpy(), s[r].to_numpy(), s[retain], s[ret_relearn])))
            row["quant_robustness"] = float(np.mean(quant_robustness(s[u].to_numpy(), s[q].to_numpy())))
            row["quant_robustness_vs_retain"] = float(np.mean(relearn_robustness(s[u].to_numpy(), s[q].to_numpy(), s[retain], s[ret_quant])))
        else:
            row["relearn_robustness"] = row["quant_robustness"] = row["quant_robustness_vs_retain"] = float("nan")
        row["robustness"] = harmonic_mean(row["relearn_robustness"], row["quant_robustness"])
        row["n_unlearned"] = len(use)
        rows[name] = row
    cols = ["faithfulness", "relearn_robustness", "quant_robustness", "robustness", "quant_robustness_vs_retain", "n_positive", "n_negative", "n_unlearned"]
    return pd.DataFrame.from_dict(rows, orient="index")[cols].rename_axis("verifier")


def meta_evaluate(
    original: Model,
    retain: Model,
    target: "Target",
    population: PopulationConfig = PopulationConfig(),
    config: MetaConfig = MetaConfig(),
    *,
    verifiers: Sequence[str] | Mapping[str, Verifier] | None = None,
    filter_insufficient: bool = False,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, Population]:
    """Build the population, score it, and meta-evaluate: (table, scores, population)."""
    pop = build_population(original, retain, target, population, progress=progress)
    scores = score_population(pop, target, verifiers, config, progress=progress)
    table = meta_table(scores, pop.frame, filter_insufficient=filter_insufficient)
    table.attrs.update(population_size=len(pop), population_seconds=pop.seconds, score_seconds=scores.attrs.get("seconds", {}))
    return table, scores, pop


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    """``python -m mechunlearn.verify.meta [--world small|default] [--out DIR]``: build the default
    population on bios-tiny (the 10% split), score every verifier, print the table (and, with
    ``--out``, write ``meta_table.csv``, ``meta_scores.csv`` and the figure)."""
    import argparse
    from pathlib import Path

    from mechunlearn.models import load_model
    from mechunlearn.models.bios_tiny import BiosTinyRecipe
    from mechunlearn.world import World

    parser = argparse.ArgumentParser(prog="python -m mechunlearn.verify.meta", description=main.__doc__)
    parser.add_argument("--world", choices=("small", "default"), default="small", help="bios-tiny recipe: the 40-person small world or the default one")
    parser.add_argument("--out", type=Path, default=None, help="folder for the table, the scores and the figure")
    parser.add_argument("--verifiers", nargs="+", default=None, choices=list(VERIFIERS), help="verifiers to score (default: all)")
    parser.add_argument("--filter-insufficient", action="store_true", help="average R and Q only over the models each verifier calls unlearned (2506.12618 §4.2.1)")
    args = parser.parse_args(argv)
    recipe = BiosTinyRecipe().small() if args.world == "small" else BiosTinyRecipe()
    start = time.perf_counter()
    original, retain = load_model("bios-tiny", recipe=recipe), load_model("bios-tiny", recipe=recipe, retain_for=0.1)
    target = World(recipe.world).target(0.1)
    table, scores, pop = meta_evaluate(original, retain, target, verifiers=args.verifiers, filter_insufficient=args.filter_insufficient)
    wall = time.perf_counter() - start
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 3):
        print(table)
        print(scores.round(3))
    print(f"population: {len(pop)} members ({', '.join(f'{k} {v}' for k, v in pop.frame['status'].value_counts().items())}), built in {pop.seconds:.0f} s; "
          f"scoring: {sum(scores.attrs['seconds'].values()):.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in scores.attrs['seconds'].items())}); wall {wall:.0f} s")
    if args.out is not None:
        from mechunlearn import figures
        from mechunlearn.figures.meta import faithfulness_robustness

        args.out.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out / "meta_table.csv")
        scores.join(pop.frame).to_csv(args.out / "meta_scores.csv")
        figures.save(faithfulness_robustness(table, title=f"verifiers on bios-tiny ({args.world} world, {len(pop)} models)"), args.out / "meta_faithfulness_robustness", png=False)
    return table


if __name__ == "__main__":
    main()
