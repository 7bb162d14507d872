"""Probe-guided fact-lookup localisation (Mechanistic Unlearning, Guo et al. 2024).

Guo et al. localise *where a fact is looked up* rather than where the output is written: linear
probes for the attribute read the subject's last token at every layer; the layers where probe
accuracy rises are the fact-lookup MLPs; only those MLPs are fine-tuned to forget (forget loss
−log(1 − p(answer)) plus the retain NLL). They report more robustness to prompt format and
relearning, and less latent knowledge left, than output-side localisations at the same budget.

Here:

1. `layer_probe_profile` — per-layer attribute probes on the subject's last token (and the
   question's last token: in bios-tiny the attribute never becomes decodable at the subject, see
   notebook 05, so ``position="auto"`` uses the position where it does), reusing
   `mechunlearn.verify.probes` (batched L-BFGS, person-split). Layer ``-1`` is the embedding
   (``blocks.0.hook_resid_pre``), so block 0's contribution is measurable too. Accuracy is read
   on held-out *retain* people (the probes never saw them): the attribute is decodable there only
   if the model looked the fact up. With ``ablate_attention_from=k`` the attention outputs of
   layers ≥ k are mean-ablated while probing (Guo et al.): the attribute can then reach the probed
   token only through MLPs (and attention before k), so a rise marks the lookup stage, not
   attention moving an attribute that was looked up elsewhere (the extraction stage).
2. `layer_rise` / `choose_fact_layers` — the rise in mean probe accuracy from layer l−1 to l;
   the layers with the largest rise (top ``n_layers``, or every layer whose rise ≥ ``min_rise``).
3. `mlp_mask` — a `MaskSelection` of those layers' MLP weights; `random_layer_mask` (random
   layers, the same number, so the same parameter count) and `random_weight_mask` (the same
   number of weights scattered over every block weight) are the matched-budget comparators;
   full fine-tuning (every block weight) is the unmatched reference.
4. `fact_lookup_unlearn` — the one loop (`mechunlearn.unlearn.unlearn`) with ``forget_prob`` and
   the mask: Δθ is exactly 0 outside it. `compare_localisations` runs all of them and returns a
   tidy table; its ``attribution_patching`` comparator fine-tunes the MLPs of the layers that
   attribution patching (`mechunlearn.locate.tracing`) ranks highest, as many as fact lookup
   chose (the same parameter count). `compare_layer_choices` tabulates the two choices.

>>> profile = layer_probe_profile(model, target)
>>> layers = choose_fact_layers(profile, n_layers=1)
>>> edit = fact_lookup_unlearn(model, target, mlp_mask(model, layers))
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
from mechunlearn.core.selection import MaskSelection, Selection
from mechunlearn.core.site import Site
from mechunlearn.locate.tracing import AttributionPatching, best_layers, layer_scores, mean_ablation
from mechunlearn.unlearn import UnlearnConfig, unlearn
from mechunlearn.verify.probes import ProbeConfig, probe_accuracy

if TYPE_CHECKING:
    from mechunlearn.models.model import Model
    from mechunlearn.world.target import Item, Target

log = logging.getLogger(__name__)

DEFAULT_UNLEARN = UnlearnConfig(loss="forget_prob", loss_options={"retain_weight": 1.0}, weights="mlp", steps=60, lr=1e-3, batch_size=32, stop_forget_em=0.05, stop_every=5)
"""Guo et al.'s loss: −log(1 − p(answer)) on forget + NLL on retain (λ = 1). lr 1e-3 and early
stopping at forget exact match ≤ 0.05 are re-tuned for bios-tiny (the paper fine-tunes 2B–7B)."""


POSITIONS = ("subject", "question")


@dataclass(frozen=True)
class FactLookupConfig:
    """Probe-guided fact-lookup localisation (Guo et al. 2024), re-tuned for small models."""

    probe: ProbeConfig = field(default_factory=lambda: ProbeConfig(positions=POSITIONS, templates_per_fact=4))
    """Probes per layer (see `ProbeConfig`); the paper reads the subject's last token, we also
    read the question's last token (see ``position``)."""
    position: str = "auto"
    """Token whose probe-accuracy rise picks the layers: ``subject`` (the paper), ``question``,
    or ``auto`` (the one whose accuracy rises more from the embedding to the last layer)."""
    split: str = "retain"
    """Probe split whose accuracy defines the rise: ``retain`` (held-out retain people) or ``train``."""
    n_layers: int | None = 1
    """Fact-lookup layers to choose (top rise); None: every layer with rise ≥ ``min_rise``."""
    min_rise: float = 0.1
    """Rise threshold when ``n_layers`` is None."""
    unlearn: UnlearnConfig = DEFAULT_UNLEARN
    """The one loop's settings (loss ``forget_prob`` by default)."""
    ablate_attention_from: int | None = None
    """Mean-ablate the attention outputs (``blocks.l.hook_attn_out``, every token, mean over the
    target's prompts) of layers ≥ this while probing, so that only MLP lookups can make the
    attribute decodable (Guo et al.); None: probe the unablated model. Off by default: on
    bios-tiny the attribute is decodable only at the question's last token, where attention
    brings it."""
    attribution: AttributionPatching = AttributionPatching(components=("mlp",))
    """The attribution-patching comparator (its top MLP layers, as many as fact lookup picks)."""
    seed: int = 0
    """Seed of the random comparators."""

    def __post_init__(self) -> None:
        if self.position not in (*POSITIONS, "auto"):
            raise ValueError(f"position must be 'subject', 'question' or 'auto', got {self.position!r}")
        wanted = POSITIONS if self.position == "auto" else (self.position,)
        missing = [p for p in wanted if p not in self.probe.positions]
        if missing:
            raise ValueError(f"position={self.position!r} needs probes at {missing}: add them to ProbeConfig.positions")
        if self.split not in ("retain", "train"):
            raise ValueError(f"split must be 'retain' or 'train', got {self.split!r}")
        if self.n_layers is not None and self.n_layers < 1:
            raise ValueError(f"n_layers must be >= 1 or None, got {self.n_layers}")
        if self.ablate_attention_from is not None and self.ablate_attention_from < 0:
            raise ValueError(f"ablate_attention_from must be a layer >= 0 or None, got {self.ablate_attention_from}")


# --------------------------------------------------------------------------- probes


def layer_probe_profile(model: "Model", target: "Target", config: FactLookupConfig = FactLookupConfig(), *, progress: bool = False) -> pd.DataFrame:
    """Probe accuracy per (position, layer, attribute, split): layer ``-1`` is the embedding
    (``blocks.0.hook_resid_pre``), layer ``l`` is ``blocks.l.hook_resid_post``.

    Columns: position (subject / question), layer, attribute, split (train / retain / forget /
    holdout), value, chance, n_items. With ``config.ablate_attention_from`` set, the model is
    probed with those layers' attention mean-ablated (`later_attention_ablation`).
    """
    probe = config.probe
    subject = model if config.ablate_attention_from is None else (model, later_attention_ablation(model, target, config.ablate_attention_from))
    post = probe_accuracy({"original": subject}, target, probe, reference=None, progress=progress).frame
    pre = probe_accuracy({"original": subject}, target, replace(probe, layers=(0,), site="hook_resid_pre"), reference=None, progress=progress).frame
    frame = pd.concat([pre.assign(layer=-1), post], ignore_index=True)
    frame = frame[frame["reading"] == "refit"]
    cols = ["position", "layer", "attribute", "split", "value", "chance", "n_items"]
    return frame[cols].sort_values(["position", "split", "attribute", "layer"]).reset_index(drop=True)


def later_attention_ablation(model: "Model", target: "Target", start: int):
    """The `Edit` mean-ablating the attention output of every layer ≥ ``start`` at every token,
    with means over the real tokens of all the target's prompts."""
    if not 0 <= start < model.n_layers:
        raise ValueError(f"ablate_attention_from={start} out of range: {model.model_id} has layers 0..{model.n_layers - 1}")
    prompts = [it.prompt for split in ("forget", "retain", "holdout") for it in target.split(split)]
    return mean_ablation(model, prompts, [f"blocks.{l}.hook_attn_out" for l in range(start, model.n_layers)])


def best_position(profile: pd.DataFrame, *, split: str = "retain") -> str:
    """The probed position whose mean accuracy rises most from the embedding (layer −1) to its
    best layer: where the attribute becomes decodable at all."""
    if "position" not in profile.columns:
        raise ValueError("the profile has no position column; build it with layer_probe_profile")
    gains = {}
    for pos, sub in profile[profile["split"] == split].groupby("position"):
        mean = sub.groupby("layer")["value"].mean()
        gains[pos] = float(mean.drop(-1, errors="ignore").max() - mean.get(-1, mean.min()))
    if not gains:
        raise ValueError(f"no probe rows for split {split!r}")
    return max(sorted(gains), key=lambda p: gains[p])


def layer_rise(profile: pd.DataFrame, *, split: str = "retain", position: str | None = "auto") -> pd.Series:
    """Rise of the mean (over attributes) probe accuracy from layer l−1 to l, indexed by l ≥ 0,
    at one probed position (``auto``: `best_position`)."""
    need = {"layer", "split", "value"}
    if not need <= set(profile.columns):
        raise ValueError(f"layer_rise needs a layer_probe_profile frame with columns {sorted(need)}; got {list(profile.columns)}")
    sub = profile[profile["split"] == split]
    if sub.empty:
        raise ValueError(f"no probe rows for split {split!r}; splits present: {sorted(profile['split'].unique())}")
    if "position" in sub.columns and position is not None:
        pos = best_position(profile, split=split) if position == "auto" else position
        sub = sub[sub["position"] == pos]
        if sub.empty:
            raise ValueError(f"no probe rows at position {pos!r}; positions present: {sorted(profile['position'].unique())}")
    mean = sub.groupby("layer")["value"].mean().sort_index()
    if -1 not in mean.index:
        raise ValueError("the profile has no layer -1 (embedding) row; build it with layer_probe_profile")
    rise = mean.diff().dropna()
    rise.index = rise.index.astype(int)
    rise.name = "rise"
    return rise


def choose_fact_layers(profile: pd.DataFrame, *, n_layers: int | None = 1, min_rise: float = 0.1, split: str = "retain", position: str | None = "auto") -> list[int]:
    """The fact-lookup layers: the ``n_layers`` largest rises (ties: earlier layer), or with
    ``n_layers=None`` every layer whose rise ≥ ``min_rise`` (at least the largest). Sorted."""
    rise = layer_rise(profile, split=split, position=position)
    if n_layers is not None:
        return best_layers(rise, n_layers)
    picked = [int(l) for l in rise.index if rise[l] >= min_rise]
    return sorted(picked or [int(rise.idxmax())])


def fact_lookup_selection(profile: pd.DataFrame, *, split: str = "retain", position: str | None = "auto") -> Selection:
    """The layers as a `Selection` of ``blocks.l.mlp.W_out`` sites scored by their probe-accuracy rise."""
    rise = layer_rise(profile, split=split, position=position)
    return Selection.from_scores([Site("param", f"blocks.{l}.mlp.W_out") for l in rise.index], rise.to_numpy())


# --------------------------------------------------------------------------- masks


def mlp_weight_names(model: "Model", layers: Sequence[int]) -> list[str]:
    """Every MLP weight (matrices and biases) of the given layers, in model order."""
    layers = [int(l) for l in layers]
    bad = [l for l in layers if not 0 <= l < model.n_layers]
    if bad or not layers:
        raise ValueError(f"layers {bad or layers} out of range: {model.model_id} has layers 0..{model.n_layers - 1}")
    wanted = {f"blocks.{l}.mlp." for l in layers}
    return [n for n in model.weight_names("mlp") if any(n.startswith(w) for w in wanted)]


def mlp_mask(model: "Model", layers: Sequence[int], *, label: str = "fact_lookup") -> MaskSelection:
    """`MaskSelection` selecting every entry of the given layers' MLP weights."""
    names = mlp_weight_names(model, layers)
    return MaskSelection({n: torch.ones(model.weight(n).shape, device=model.device) for n in names}, meta={"layers": list(layers), "label": label})


def random_layer_mask(model: "Model", n_layers: int, *, exclude: Sequence[int] = (), seed: int = 0) -> MaskSelection:
    """The MLPs of ``n_layers`` random layers (not in ``exclude`` while enough others exist): the
    matched-budget comparator (every layer's MLP has the same parameter count)."""
    pool = [l for l in range(model.n_layers) if l not in set(exclude)]
    if len(pool) < n_layers:
        pool = list(range(model.n_layers))
    if n_layers > len(pool):
        raise ValueError(f"cannot pick {n_layers} layers from {model.model_id}'s {model.n_layers}")
    rng = np.random.default_rng(seed)
    layers = sorted(int(l) for l in rng.choice(pool, size=n_layers, replace=False))
    return mlp_mask(model, layers, label="random_layers")


def random_weight_mask(model: "Model", budget: int, *, family: str = "no_embed", seed: int = 0) -> MaskSelection:
    """``budget`` weights chosen uniformly at random over a weight family (default: every block
    weight): full fine-tuning restricted to the same parameter budget."""
    names = model.weight_names(family)
    total = sum(model.weight(n).numel() for n in names)
    if not 0 < budget <= total:
        raise ValueError(f"budget must be in 1..{total} (the {family} weights), got {budget}")
    gen = torch.Generator().manual_seed(seed)
    scores = {n: torch.rand(model.weight(n).shape, generator=gen) for n in names}
    return MaskSelection(scores, meta={"label": "random_weights"}).top(budget)


# --------------------------------------------------------------------------- unlearning


def fact_lookup_unlearn(model: "Model", target: "Target", mask: MaskSelection | None, config: UnlearnConfig = DEFAULT_UNLEARN) -> DeltaEdit:
    """Fine-tune only ``mask``'s entries with the one loop (``forget_prob`` + retain NLL by default);
    ``mask=None`` fine-tunes ``config.weights`` entirely. Returns the `DeltaEdit` (model left unedited)."""
    if mask is not None and not isinstance(mask, MaskSelection):
        raise TypeError(f"mask must be a MaskSelection (e.g. mlp_mask(model, layers)), got {type(mask).__name__}")
    return unlearn(model, target, config, mask=mask)


def changed_parameters(model: "Model", edit: DeltaEdit) -> int:
    """Number of scalar weights a `DeltaEdit` changes (non-zero delta inside its mask)."""
    total = 0
    for name in edit.deltas:
        delta = edit.dense(name)
        keep = None if edit.mask is None else edit.mask.masks[name].to(delta.device)
        total += int(((delta != 0) if keep is None else (delta != 0) & keep).sum())
    return total


@dataclass(frozen=True)
class LocalisationRun:
    """One comparator of `compare_localisations`: its mask, edit and cost."""

    method: str
    mask: MaskSelection | None
    edit: DeltaEdit
    seconds: float
    budget: int


def compare_localisations(
    model: "Model",
    target: "Target",
    layers: Sequence[int],
    config: FactLookupConfig = FactLookupConfig(),
    *,
    evaluate: Callable[[DeltaEdit], Mapping[str, float]] | None = None,
    methods: Sequence[str] = ("fact_lookup", "attribution_patching", "random_layers", "random_weights", "full"),
    progress: bool = True,
) -> tuple[pd.DataFrame, dict[str, LocalisationRun]]:
    """Fine-tune under each localisation at a matched budget and tabulate.

    ``fact_lookup``: the given layers' MLPs; ``attribution_patching``: the MLPs of as many layers,
    those that ``config.attribution`` ranks highest; ``random_layers``: as many random other layers' MLPs;
    ``random_weights``: the same number of weights scattered over every block weight; ``full``:
    every block weight (no budget match, the reference). ``evaluate(edit) -> {split: value}``
    (default: forget / retain exact match on the target) fills the table.

    Returns the tidy table (method, metric, split, value, budget, changed, steps, seconds, layers:
    the MLP layers, ``scattered`` or ``all``) and the runs.
    """
    from mechunlearn.verify.behavior import score_items

    known = ("fact_lookup", "attribution_patching", "random_layers", "random_weights", "full")
    bad = [m for m in methods if m not in known]
    if bad:
        raise ValueError(f"unknown comparators {bad}; choose from {known}")
    fact = mlp_mask(model, layers)
    budget = len(fact)
    masks: dict[str, Callable[[], MaskSelection | None]] = {
        "fact_lookup": lambda: fact,
        "attribution_patching": lambda: mlp_mask(
            model, config.attribution.top_layers(model, target, len(layers), progress=progress), label="attribution_patching"),
        "random_layers": lambda: random_layer_mask(model, len(layers), exclude=layers, seed=config.seed),
        "random_weights": lambda: random_weight_mask(model, budget, seed=config.seed),
        "full": lambda: None,
    }
    if evaluate is None:

        def evaluate(edit):
            with edit.applied(model):
                return {s: float(score_items(model, list(target.split(s)), progress=False)["exact_match"].mean()) for s in ("forget", "retain")}

    runs: dict[str, LocalisationRun] = {}
    rows = []
    for method in tqdm(methods, desc="localisations", leave=False, disable=not progress):
        mask = masks[method]()
        cfg = config.unlearn if mask is not None else replace(config.unlearn, weights="no_embed")
        start = time.perf_counter()
        edit = fact_lookup_unlearn(model, target, mask, cfg)
        seconds = time.perf_counter() - start
        size = len(mask) if mask is not None else sum(model.weight(n).numel() for n in model.weight_names("no_embed"))
        runs[method] = LocalisationRun(method, mask, edit, seconds, size)
        if mask is None:
            where = "all"
        elif "layers" in mask.meta:
            where = ",".join(map(str, mask.meta["layers"]))
        else:
            where = "scattered"
        for split, value in evaluate(edit).items():
            rows.append({"method": method, "metric": "exact_match", "split": split, "value": value, "budget": size,
                         "changed": changed_parameters(model, edit), "steps": edit.meta.get("steps"), "seconds": seconds,
                         "layers": where})
    return pd.DataFrame(rows), runs


def compare_layer_choices(
    profile: pd.DataFrame,
    attribution: pd.DataFrame,
    n_layers: int,
    *,
    split: str = "retain",
    position: str | None = "auto",
    attribution_position: str = "max",
) -> pd.DataFrame:
    """Fact lookup's ``n_layers`` layers against attribution patching's top ``n_layers`` MLP
    layers: the same number of layers, so the same MLP parameter budget.

    ``profile``: a `layer_probe_profile`; ``attribution``: an `attribution_patch` table with the
    ``mlp`` component. Columns: method (fact_lookup / attribution_patching), rank (1 = best),
    layer, score (probe-accuracy rise / attribution at ``attribution_position``), chosen (in the
    method's top ``n_layers``), shared (chosen by both). One row per method and layer.
    """
    scores = {"fact_lookup": layer_rise(profile, split=split, position=position),
              "attribution_patching": layer_scores(attribution, component="mlp", position=attribution_position)}
    chosen = {method: best_layers(score, n_layers) for method, score in scores.items()}
    both = set(chosen["fact_lookup"]) & set(chosen["attribution_patching"])
    rows = []
    for method, score in scores.items():
        order = sorted(score.index, key=lambda l: (-score[l], l))
        for rank, layer in enumerate(order, 1):
            rows.append({"method": method, "rank": rank, "layer": int(layer), "score": float(score[layer]),
                         "chosen": layer in chosen[method], "shared": layer in both})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class FactLookupResult:
    """What `fact_lookup` returns: the masked fine-tune and the probe evidence that chose it."""

    edit: DeltaEdit
    """The fine-tune of the fact-lookup MLPs (Δθ = 0 outside them)."""
    layers: tuple[int, ...]
    """The chosen layers."""
    position: str
    """The probed position whose rise chose them."""
    profile: pd.DataFrame
    """`layer_probe_profile` of the unedited model."""
    mask: MaskSelection
    """The MLP weights of the chosen layers."""


def fact_lookup(model: "Model", target: "Target", config: FactLookupConfig = FactLookupConfig(), *, progress: bool = False) -> FactLookupResult:
    """Probe-guided fact-lookup unlearning end to end (Guo et al. 2024): probe profile → layers with
    the largest accuracy rise → fine-tune only their MLPs with the one loop. Model left unedited."""
    profile = layer_probe_profile(model, target, config, progress=progress)
    position = best_position(profile, split=config.split) if config.position == "auto" else config.position
    layers = choose_fact_layers(profile, n_layers=config.n_layers, min_rise=config.min_rise, split=config.split, position=position)
    mask = mlp_mask(model, layers)
    edit = fact_lookup_unlearn(model, target, mask, config.unlearn)
    return FactLookupResult(edit, tuple(layers), position, profile, mask)
