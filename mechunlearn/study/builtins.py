"""The registrations that ship with mechunlearn: the world and file target sources, the unlearning
baselines (and the ``none`` / ``retain`` references), and the behaviour verifier.

Imported by `mechunlearn.study`; add the project's further methods and verifiers here (the study
layer adapts library functions to the study contract, so `locate/` and `verify/` never import it).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Mapping

from mechunlearn.core.edit import Compose, WeightEdit
from mechunlearn.core.result import Result
from mechunlearn.study.registry import (
    METHODS,
    TARGETS,
    VERIFIERS,
    Method,
    RunContext,
    StudyTarget,
    TargetSource,
    Verifier,
    unlearn_edit,
    unlearn_params,
)

if TYPE_CHECKING:
    from mechunlearn.models.model import Model
    from mechunlearn.world.target import Target

# ---------------------------------------------------------------------------- targets


def world_target(model: "Model", params: Mapping[str, Any]) -> StudyTarget:
    """A forget split of the model's synthetic world: the edit sees ``paraphrase`` templates,
    the verifiers ``eval_paraphrase`` templates and (if > 0) only ``eval_retain_people`` of the
    retain people, so evaluation stays cheap."""
    from mechunlearn.world import World

    world_config = model.meta.get("world_config")
    if world_config is None:
        raise ValueError(f"{model.model_id} has no synthetic world; the 'world' target source needs bios-tiny")
    world = World(world_config)
    edit = world.target(params["forget_frac"], paraphrase=params["paraphrase"])
    verify = world.target(params["forget_frac"], paraphrase=params["eval_paraphrase"])
    n = params["eval_retain_people"]
    if n < 0:
        raise ValueError(f"eval_retain_people must be >= 0 (0: all), got {n}")
    if n:
        keep = set(world.retain_people(params["forget_frac"])[:n])
        verify = replace(verify, retain=tuple(i for i in verify.retain if i.subject in keep), meta={**verify.meta, "eval_retain_people": n})
    return StudyTarget(edit=edit, verify=verify)


TARGETS.add(
    "world",
    TargetSource(
        world_target,
        {"forget_frac": 0.1, "paraphrase": "trained", "eval_paraphrase": "all", "eval_retain_people": 0},
        "a forget split of bios-tiny's world (forget_frac of the people)",
    ),
)



def file_target(model: "Model", params: Mapping[str, Any]) -> StudyTarget:
    """A target read from the user's files (`load_target`: a data file or a folder of split
    files; paths relative to the working directory). The edit sees the first wording of each
    question (``paraphrase: trained``), the verifiers every item; ``oracle`` names the retain
    model (a `load_model` name or path: trained without the forget set) of the card and of the
    ``retain`` method; ``models`` (if not empty) the study's models the target is crossed with."""
    from mechunlearn.data import load_target

    if not params["path"]:
        raise ValueError("the 'file' target source needs path: a data file or folder (README, 'Your data')")
    target = load_target(params["path"], retain=params["retain"], holdout=params["holdout"], protocol=params["protocol"])
    edit = target.where(paraphrase="trained") if target.kind != "corpus" else target
    return StudyTarget(edit=edit, verify=target)


TARGETS.add(
    "file",
    TargetSource(
        file_target,
        {"path": "", "retain": None, "holdout": None, "protocol": None, "oracle": None, "models": []},
        "a target from files: QA table, TOFU layout, multiple choice or corpus (oracle: the retain model)",
    ),
)

# ---------------------------------------------------------------------------- methods


def no_edit(model: "Model", target: "Target", params: Mapping[str, Any], seed: int) -> Compose:
    """The unedited model (an empty edit): the 'before' row of every table."""
    return Compose([])


def retain_weights(model: "Model", target: "Target", params: Mapping[str, Any], seed: int, *, ctx: RunContext) -> Compose:
    """Exact unlearning as an edit: set every weight to the retain model's (trained without the
    forget people), so verifiers see the honest reference through the same code path."""
    retain = ctx.retain_model()
    if retain.weight_names() != model.weight_names():
        raise ValueError(f"{retain.model_id} and {model.model_id} have different weights; a retain model must share the recipe")
    return Compose([WeightEdit(name, "set", value=retain.weight(name).detach().clone()) for name in model.weight_names()])


METHODS.add("none", Method(no_edit, description="no edit: the original model"))
METHODS.add("retain", Method(retain_weights, context=True, description="the retain model's weights: exact unlearning"))

_BASELINES = {
    "ga": "gradient ascent on the forget answers",
    "graddiff": "gradient difference: ascent on forget, descent on retain",
    "npo": "negative preference optimisation",
    "simnpo": "SimNPO: reference-free, length-normalised NPO",
    "rmu": "representation misdirection at one residual layer",
}
for _loss, _text in _BASELINES.items():
    METHODS.add(_loss, Method(unlearn_edit(_loss), unlearn_params(_loss), description=_text))

# Localized weight-space methods (METHODS.md): a mask from a per-weight score, then the loop.


def salun_mask(model: "Model", target: "Target", params: Mapping[str, Any], seed: int):
    """SalUn: the top ``keep_ratio`` of |∇NLL_f| (globally, or per tensor)."""
    from mechunlearn.locate.saliency import SalUnSaliency

    return SalUnSaliency(keep_ratio=params["keep_ratio"], per_tensor=params["per_tensor"]).mask(model, target, progress=False)


def wagle_mask(model: "Model", target: "Target", params: Mapping[str, Any], seed: int):
    """WAGLE: the top ``keep_ratio`` of |(θ − g_r/γ) ⊙ g_f|."""
    from mechunlearn.locate.saliency import WagleAttribution

    scorer = WagleAttribution(keep_ratio=params["keep_ratio"], per_tensor=params["per_tensor"], gamma=params["gamma"], retain_items=params["retain_items"], seed=seed)
    return scorer.mask(model, target, progress=False)


_MASK = {"keep_ratio": 0.1, "per_tensor": False}
_WAGLE = {**_MASK, "gamma": 1e-3, "retain_items": 1024}
METHODS.add("salun", Method(unlearn_edit("graddiff"), unlearn_params("graddiff", **_MASK), locate=salun_mask, description="SalUn saliency mask + GradDiff"))
METHODS.add("wagle_graddiff", Method(unlearn_edit("graddiff"), unlearn_params("graddiff", **_WAGLE), locate=wagle_mask, description="WAGLE attribution mask + GradDiff"))
METHODS.add("wagle_npo", Method(unlearn_edit("npo"), unlearn_params("npo", **_WAGLE), locate=wagle_mask, description="WAGLE attribution mask + NPO"))


# Planted knowledge (issue 14, §3): unlearning restricted to the planted set S, to a localizer's
# top-|S| entries, or to |S| random entries (models bios-tiny-planted-<type> only).


def planted_mask(model: "Model", target: "Target", params: Mapping[str, Any], seed: int):
    """``selection``: ``oracle`` (S itself), ``random`` (|S| uniform entries) or a localizer of
    `mechunlearn.locate.suite.SUITE` (its top-|S| entries at its own granularity)."""
    from mechunlearn.locate.suite import SUITE, run_suite
    from mechunlearn.models.planted import planted_selection
    from mechunlearn.verify.localization import GroundTruth, oracle_scores, random_scores, top_entries

    truth = GroundTruth.of(model, planted_selection(model))
    pick = params["selection"]
    if pick == "oracle":
        granularity, output = "entries", oracle_scores(truth, "entries")
    elif pick == "random":
        granularity, output = "entries", random_scores(truth, "entries", seed=seed)
    elif pick in SUITE:
        granularity, output = run_suite(model, target, [pick], seed=seed, progress=False)[pick]
    else:
        raise ValueError(f"selection {pick!r}: use oracle, random or a localizer of the suite ({', '.join(SUITE)})")
    return top_entries(output, truth, granularity)


_PLANTED_STOP = {"steps": 150, "stop_forget_em": 0.08, "stop_every": 5, "stop_items": 300}
for _loss, _lr, _extra in (("ga", 1e-4, {}), ("graddiff", 3e-4, {"retain_weight": 5.0}), ("npo", 1e-4, {})):
    METHODS.add(f"planted_{_loss}", Method(unlearn_edit(_loss), unlearn_params(_loss, selection="oracle", lr=_lr, **_PLANTED_STOP, **_extra),
                                           locate=planted_mask, description=f"{_loss} restricted to S, a localizer's top-|S| or |S| random entries (planted models)"))


def slug_edit(model: "Model", target: "Target", params: Mapping[str, Any], seed: int):
    """SLUG: one gradient, the Pareto tensors, the smallest one-step edit meeting the forget criterion."""
    from mechunlearn.locate.slug import SlugConfig, slug

    config = SlugConfig(**{k: params[k] for k in ("forget_threshold", "retain_items", "forget_eval_items", "retain_eval_items", "max_candidates")}, seed=seed)
    result = slug(model, target, config, progress=False)
    if result.edit is None:
        best = result.table.sort_values("forget_em").head(1).to_dict("records") if len(result.table) else []
        raise ValueError(f"SLUG: no Pareto tensor reached forget exact match <= {config.forget_threshold}; best: {best}")
    return result.edit


METHODS.add(
    "slug",
    Method(
        slug_edit,
        {"forget_threshold": 0.1, "retain_items": 512, "forget_eval_items": None, "retain_eval_items": 256, "max_candidates": 6},
        description="SLUG: a one-step edit of one Pareto tensor",
    ),
)


def needle_edit(model: "Model", target: "Target", params: Mapping[str, Any], seed: int):
    """Needle per forget person: their best value vector noised, then gradient ascent on their bios."""
    from mechunlearn.locate.concept_vectors import NeedleConfig, needle_subjects

    config = NeedleConfig(sigma=params["sigma"], steps=params["steps"], lr=params["lr"], data=params["data"], seed=seed)
    return needle_subjects(model, target, config, progress=False)[0]


METHODS.add("needle", Method(needle_edit, {"sigma": 1.0, "steps": 20, "lr": 5e-2, "data": "texts"}, description="ConceptVectors' Needle on each forget person's value vector"))

# Activation-space methods (issue 4): LUNAR redirection and probe-guided fact-lookup fine-tuning.


def lunar_edit(model: "Model", target: "Target", params: Mapping[str, Any], seed: int):
    """LUNAR: redirect forget activations toward "cannot answer" ones by refitting one ``W_out``."""
    from mechunlearn.locate.lunar import LunarConfig, lunar

    options = {k: (tuple(v) if isinstance(v, list) else v) for k, v in params.items()}
    return lunar(model, target, LunarConfig(**options, seed=seed), progress=False).edit


METHODS.add(
    "lunar",
    Method(lunar_edit, {"coef": 1.5, "layer": None, "method": "ridge", "ridge": 1e-3, "retain_items": 512, "sweep_items": 200},
           description="LUNAR: the W_out of one layer refit so forget questions are answered 'unknown'"),
)


def fact_lookup_edit(model: "Model", target: "Target", params: Mapping[str, Any], seed: int):
    """Probe-guided fact-lookup localisation: fine-tune only the MLPs where the attribute becomes decodable."""
    from dataclasses import replace as _replace

    from mechunlearn.locate.fact_lookup import DEFAULT_UNLEARN, FactLookupConfig, fact_lookup

    loop = _replace(DEFAULT_UNLEARN, steps=params["steps"], lr=params["lr"], stop_forget_em=params["stop_forget_em"], seed=seed)
    return fact_lookup(model, target, FactLookupConfig(n_layers=params["n_layers"], unlearn=loop, seed=seed)).edit


METHODS.add(
    "fact_lookup",
    Method(fact_lookup_edit, {"n_layers": 1, "steps": 60, "lr": 1e-3, "stop_forget_em": 0.1},
           description="probe-guided fact-lookup MLPs fine-tuned with -log(1-p) + retain loss"),
)

# Feature-space methods (issue 4): SAE negative clamping and CodeUnlearn. Their dictionaries are
# trained on first use and cached under $MECHUNLEARN_HOME/features/<model>-<weights hash>/.


def sae_clamp_edit(model: "Model", target: "Target", params: Mapping[str, Any], seed: int):
    """Conditional negative clamping of the SAE latents that fire more on forget than on retain data."""
    from mechunlearn.locate.sae import SAEFeatureFrequency, SAETrainConfig, sae_clamp

    config = SAETrainConfig(hook=params["hook"], d_sae=params["d_sae"], k=params["k"], steps=params["steps"], seed=seed)
    locator = SAEFeatureFrequency(hook=params["hook"], score="ratio", per_subject=params["per_subject"])
    return sae_clamp(model, target, config=config, locator=locator, n_features=params["n_features"], value=params["value"], mode=params["mode"], progress=False)[0]


METHODS.add(
    "sae_clamp",
    Method(sae_clamp_edit, {"hook": "blocks.2.hook_resid_post", "d_sae": 4096, "k": 16, "steps": 2000, "per_subject": True, "n_features": 20, "value": 12.0, "mode": "clamp"},
           description="SAE features (SAELens) selected by forget/retain firing, clamped to -c where active"),
)


def codeunlearn_edit(model: "Model", target: "Target", params: Mapping[str, Any], seed: int):
    """CodeUnlearn: a codebook bottleneck with the forget-specific codes disabled (no gradient steps)."""
    from mechunlearn.locate.codebook import CodebookConfig, codeunlearn

    config = CodebookConfig(hook=params["hook"], n_codes=params["n_codes"], k=params["k"], steps=params["steps"])
    return codeunlearn(model, target, config=config, n_codes=params["disable"], mode=params["mode"], random=params["random"], seed=seed, progress=False)[0]


METHODS.add(
    "codeunlearn",
    Method(codeunlearn_edit, {"hook": "blocks.1.hook_resid_post", "n_codes": 4096, "k": 8, "steps": 1500, "disable": 512, "mode": "zero", "random": False},
           description="CodeUnlearn: codebook features, forget-frequent codes disabled (random=True: random codes)"),
)

# ---------------------------------------------------------------------------- verifiers


def behavior_verifier(model: "Model", target: "Target", params: Mapping[str, Any], ctx: RunContext) -> Result:
    """Exact match, answer log-prob and normalised probability per split (and per ``by`` column)."""
    from mechunlearn.verify.behavior import behavior

    by = list(params["by"])
    common = dict(splits=params["splits"], batch_size=params["batch_size"], method=ctx.method, run_id=ctx.run_id, seed=ctx.seed)
    if not by:
        return behavior(model, target, aggregate="split", **common)
    result = behavior(model, target, aggregate="item", **common)
    frame = result.frame
    missing = [c for c in by if c not in frame.columns]
    if missing:
        raise ValueError(f"behavior: cannot group by {missing}; item columns are {sorted(frame.columns)}")
    keys = ["run_id", "method", "seed", "split", *by, "metric"]
    grouped = frame.groupby(keys, as_index=False, sort=False, dropna=False)
    table = grouped["value"].mean().merge(grouped.size().rename(columns={"size": "n_items"}), on=keys)
    return Result(table, result.provenance)


def _tradeoff_trained(frame):
    from mechunlearn.figures.study import tradeoff

    return tradeoff(frame, paraphrase="trained")


def _tradeoff_heldout(frame):
    from mechunlearn.figures.study import tradeoff

    has_heldout = "paraphrase" in frame.columns and (frame["paraphrase"] == "heldout").any()
    return tradeoff(frame, paraphrase="heldout") if has_heldout else None


def _split_bars(frame):
    from mechunlearn.figures.study import split_bars

    return split_bars(frame)


VERIFIERS.add(
    "behavior",
    Verifier(
        behavior_verifier,
        {"splits": ["forget", "retain", "holdout"], "by": ["paraphrase"], "batch_size": 64},
        headline=("exact_match",),
        figures=(_tradeoff_trained, _tradeoff_heldout, _split_bars),
        description="greedy exact match, answer log-prob and normalised probability per split",
    ),
)


def _sub_config(cls, given: Mapping[str, Any], where: str, **fixed):
    """``cls(**given, **fixed)`` with the study file's lists made tuples, and unknown or doubly
    given fields named in the error (e.g. ``attacks: {max_items: 300}`` → `AttackConfig`)."""
    from dataclasses import fields

    known = {f.name for f in fields(cls)} - set(fixed)
    unknown = sorted(set(given) - known)
    if unknown:
        raise ValueError(f"card: unknown {where} settings {unknown}; `{where}` takes {sorted(known)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}, **fixed)


def card_verifier(model: "Model", target: "Target", params: Mapping[str, Any], ctx: RunContext) -> Result:
    """The evaluation card (EVALS.md) of the run's edit against the original and retain models:
    probes, traces, attacks, membership inference and TOFU metrics. Rows of the edited model are
    kept (``role`` = ``edited``), and the probe rows of all three roles (the original's and the
    retain model's are the references of the probe heatmaps).

    ``probes``, ``attacks``, ``mia`` and ``tofu`` take the fields of `ProbeConfig`, `AttackConfig`,
    `MIAConfig` and `TofuConfig` (e.g. ``probes: {templates_per_fact: 2, layers: [1, 2]}``,
    ``tofu: {max_qa_items: 300}``); ``relearn_steps`` is the attacks' (not repeated there)."""
    from mechunlearn.verify.attacks import AttackConfig
    from mechunlearn.verify.card import CardConfig, evaluation_card
    from mechunlearn.verify.mia import MIAConfig
    from mechunlearn.verify.probes import ProbeConfig
    from mechunlearn.verify.tofu import TofuConfig

    config = CardConfig(
        sections=tuple(params["sections"]),
        probes=_sub_config(ProbeConfig, params["probes"], "probes"),
        attacks=_sub_config(AttackConfig, params["attacks"], "attacks", relearn_steps=params["relearn_steps"]),
        mia=_sub_config(MIAConfig, params["mia"], "mia"),
        tofu=_sub_config(TofuConfig, params["tofu"], "tofu"),
        max_items=params["max_items"],
        seed=ctx.seed,
        method=ctx.method,
        run_id=ctx.run_id,
    )
    retain = ctx.retain_model() if ctx.has_retain_model() else None
    card = evaluation_card((model, ctx.edit), None, retain, target, config)
    frame = card.frame.rename(columns={"model": "role"})
    keep = (frame["role"] == "edited") | (frame["section"] == "probes")
    return Result(frame[keep].reset_index(drop=True), card.provenance)


def _probe_heatmap(frame):
    from mechunlearn.figures.verify import probe_heatmap

    rows = frame[frame["metric"] == "probe_acc"]
    if rows.empty or "role" not in rows.columns:
        return None
    rows = rows.drop(columns=["model"], errors="ignore").rename(columns={"role": "model"})
    positions = list(dict.fromkeys(rows["position"].dropna()))
    position = "subject" if "subject" in positions or not positions else positions[0]  # the one the study probed
    return probe_heatmap(rows[rows["label"] == rows["label"].iloc[0]] if "label" in rows.columns else rows, position=position)


VERIFIERS.add(
    "card",
    Verifier(
        card_verifier,
        {"sections": ["probes", "weights", "attacks", "mia", "tofu"], "max_items": 600, "relearn_steps": 10, "probes": {}, "attacks": {}, "mia": {}, "tofu": {}},
        headline=("forget_quality", "forget_truth_ratio", "retain_utility", "privleak"),
        figures=(_probe_heatmap,),
        applies_edit=True,
        description="the evaluation card: probes, weight traces, attacks, membership inference, TOFU metrics",
    ),
)

# UNDO (issue 15): unlearn, then distil the unlearned teacher into its noised copy (arXiv 2506.06278).


def undo_edit(model: "Model", target: "Target", params: Mapping[str, Any], seed: int):
    """UNDO: ``base`` (a registered loss) through `unlearn`, then distillation into the noised copy."""
    from mechunlearn.unlearn import UnlearnConfig
    from mechunlearn.unlearn.undo import UndoConfig, undo

    teacher = UnlearnConfig(loss=params["base"], steps=params["unlearn_steps"], lr=params["unlearn_lr"], stop_forget_em=params["stop_forget_em"], seed=seed)
    config = UndoConfig(unlearn=teacher, alpha=params["alpha"], beta=params["beta"], steps=params["steps"], lr=params["lr"],
                        forget_weight=params["forget_weight"], data=params["data"], seed=seed)
    return undo(model, target, config)


METHODS.add(
    "undo",
    Method(undo_edit, {"base": "npo", "unlearn_steps": 60, "unlearn_lr": 1e-4, "stop_forget_em": 0.0, "alpha": 0.3, "beta": 1.0,
                       "steps": 200, "lr": 1e-3, "forget_weight": 0.0, "data": "both"},
           description="UNDO: unlearn (base loss), then distil into a noised copy (arXiv 2506.06278)"),
)
