"""Planted knowledge (issue 14, §1): models whose forget facts live in a known component set S.

Start from the retain model of a split (it never saw the forget people) and teach it the
forget people's documents (bios, trained-template QA) by training **only** S through the one
loop (`mechunlearn.unlearn.loop.fit` with a mask), replaying retain documents so retain facts
stay. Outside S the weights are bit for bit the retain model's, so the retain model is the
exact-unlearning oracle and restoring S *is* exact unlearning.

Plant types (`plant_mask`): ``neurons`` (k MLP hidden units of one layer: W_in columns, b_in
entries, W_out rows), ``layer`` (one whole MLP layer), ``sparse`` (a random 1% of the entries
of every block weight), ``heads`` (a few attention heads of one layer: their W_Q/W_K/W_V/W_O
slices and biases). ``low_rank`` is not built yet (a rank-r delta needs factor tensors trained
through the loop's ``extra`` hook; see the README section "Planted knowledge").

Gates before saving: forget exact match ≥ ``gate_forget`` on trained templates (held-out
templates reported), retain exact match within ``gate_retain_drop`` of the retain model's.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from mechunlearn.core.paths import home
from mechunlearn.core.result import config_hash
from mechunlearn.core.selection import MaskSelection
from mechunlearn.models.model import Model
from mechunlearn.models.text import TokenBatch, lm_nll, pad
from mechunlearn.unlearn.loop import TrainConfig, fit

log = logging.getLogger(__name__)

PLANT_TYPES = ("neurons", "layer", "sparse", "heads")


@dataclass(frozen=True)
class PlantRecipe:
    """Everything that determines a planted model (its hash names the cache folder)."""

    kind: str = "layer"
    """One of `PLANT_TYPES`."""
    layer: int = 1
    """The block that holds S (``neurons``, ``layer``, ``heads``)."""
    k: int = 256
    """Neurons (``neurons``) or heads (``heads``) in S."""
    density: float = 0.01
    """Share of block-weight entries in S (``sparse``)."""
    retain_for: float = 0.1
    """The forget split whose retain model is planted into."""
    replay: float = 0.7
    """Share of each batch drawn from the retain documents (0.5 missed the retain gate by 0.0015 on
    the small world's layer plant, 150 steps at lr 3e-3; 0.7 passed it: forget 0.969, retain 0.978
    against the retain model's 0.987)."""
    batch_size: int = 64
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=400, lr=3e-3, warmup=10, schedule="cosine", min_lr_ratio=0.1, autocast="auto"))
    gate_forget: float = 0.95
    gate_retain_drop: float = 0.02
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in PLANT_TYPES:
            raise ValueError(f"unknown plant type {self.kind!r}; choose one of {', '.join(PLANT_TYPES)}")
        if not 0 <= self.replay < 1:
            raise ValueError(f"replay must be in [0, 1), got {self.replay}")


def plant_mask(model: Model, recipe: PlantRecipe) -> MaskSelection:
    """S as a `MaskSelection` over TL weight names (scores 1 on S, 0 elsewhere)."""
    gen = torch.Generator().manual_seed(recipe.seed)
    n_layers = sum(1 for n in model.weight_names() if n.endswith(".mlp.W_in"))
    if not 0 <= recipe.layer < n_layers:
        raise ValueError(f"layer {recipe.layer} out of range for a {n_layers}-layer model")
    L = recipe.layer
    masks: dict[str, torch.Tensor] = {}
    if recipe.kind in ("neurons", "layer"):
        d_mlp = model.weight(f"blocks.{L}.mlp.b_in").shape[0]
        if recipe.kind == "neurons":
            if not 0 < recipe.k <= d_mlp:
                raise ValueError(f"k must be in 1..{d_mlp}, got {recipe.k}")
            idx = torch.randperm(d_mlp, generator=gen)[: recipe.k]
        else:
            idx = torch.arange(d_mlp)
        hidden = torch.zeros(d_mlp, dtype=torch.bool)
        hidden[idx] = True
        w_in = model.weight(f"blocks.{L}.mlp.W_in")
        w_out = model.weight(f"blocks.{L}.mlp.W_out")
        masks[f"blocks.{L}.mlp.W_in"] = hidden.expand(w_in.shape).clone()
        masks[f"blocks.{L}.mlp.b_in"] = hidden.clone()
        masks[f"blocks.{L}.mlp.W_out"] = hidden[:, None].expand(w_out.shape).clone()
        if recipe.kind == "layer":
            masks[f"blocks.{L}.mlp.b_out"] = torch.ones_like(model.weight(f"blocks.{L}.mlp.b_out"), dtype=torch.bool)
    elif recipe.kind == "heads":
        n_heads = model.weight(f"blocks.{L}.attn.W_Q").shape[0]
        if not 0 < recipe.k <= n_heads:
            raise ValueError(f"k must be in 1..{n_heads} heads, got {recipe.k}")
        heads = torch.zeros(n_heads, dtype=torch.bool)
        heads[torch.randperm(n_heads, generator=gen)[: recipe.k]] = True
        for w in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V"):
            shape = model.weight(f"blocks.{L}.attn.{w}").shape
            masks[f"blocks.{L}.attn.{w}"] = heads.view(-1, *([1] * (len(shape) - 1))).expand(shape).clone()
    else:  # sparse
        if not 0 < recipe.density < 1:
            raise ValueError(f"density must be in (0, 1), got {recipe.density}")
        for name in model.weight_names():
            if name.startswith("blocks.") and ".ln" not in name:
                shape = model.weight(name).shape
                masks[name] = torch.rand(shape, generator=gen) < recipe.density
    return MaskSelection({n: m.float() for n, m in masks.items()}, masks, {"plant": recipe.kind, "layer": recipe.layer})


def _forget_and_retain_docs(world, retain_for: float) -> tuple[list[str], list[str]]:
    retain_docs = world.training_texts(exclude=world.forget_people(retain_for))
    keep = set(retain_docs)
    forget_docs = [d for d in world.training_texts() if d not in keep]
    return forget_docs, retain_docs


def plant_gates(model: Model, world, retain_for: float) -> pd.DataFrame:
    """Exact match of the forget people (trained / held-out templates) and of the retain people."""
    from mechunlearn.verify.behavior import score_items

    rows = []
    groups = {"forget": world.forget_people(retain_for), "retain": world.retain_people(retain_for)}
    for group, names in groups.items():
        for paraphrase in ("trained", "heldout"):
            items = [q for n in names for a in world.ATTRIBUTES for q in world.questions(n, a, paraphrase=paraphrase)]
            if group == "retain" and paraphrase == "trained":
                items = items[::3]
            scored = score_items(model, items, batch_size=256, progress=False)
            rows.append({"gate": f"{group}_{paraphrase}", "exact_match": float(scored["exact_match"].mean()), "n_items": len(scored)})
    return pd.DataFrame(rows)


def build_planted(model: Model, world, recipe: PlantRecipe) -> tuple[Model, MaskSelection, pd.DataFrame]:
    """Plant the forget people's documents into ``model`` (a freshly loaded retain model, trained
    in place) through S only; check the gates (raises `mechunlearn.models.bios_tiny.GateError`
    when one fails). ``S.meta["oracle_values"]`` holds the retain model's values on S."""
    from mechunlearn.models.bios_tiny import GateError

    start = time.perf_counter()
    S = plant_mask(model, recipe)
    before = plant_gates(model, world, recipe.retain_for).set_index("gate")["exact_match"]
    oracle = {n: model.weight(n).detach()[m].clone() for n, m in S.masks.items()}
    S = MaskSelection(S.scores, S.masks, dict(S.meta, oracle_values=oracle))
    model.model_id = f"bios-tiny-planted-{recipe.kind}"
    forget_docs, retain_docs = _forget_and_retain_docs(world, recipe.retain_for)
    n_ctx = model.bridge.cfg.n_ctx

    tokens, attn = pad([[model.bos_token_id, *model.encode(d), model.eos_token_id] for d in forget_docs + retain_docs], model.pad_token_id, n_ctx)
    f_tok, f_att = tokens[: len(forget_docs)], attn[: len(forget_docs)]
    r_tok, r_att = tokens[len(forget_docs) :], attn[len(forget_docs) :]
    gen = torch.Generator().manual_seed(recipe.seed)
    n_r = int(round(recipe.batch_size * recipe.replay))
    n_f = recipe.batch_size - n_r

    def loss(step: int) -> torch.Tensor:
        fi = torch.randint(len(f_tok), (n_f,), generator=gen)
        tok, att = f_tok[fi], f_att[fi]
        if n_r:
            ri = torch.randint(len(r_tok), (n_r,), generator=gen)
            tok, att = torch.cat([tok, r_tok[ri]]), torch.cat([att, r_att[ri]])
        width = int(att.sum(-1).max())
        return lm_nll(model, TokenBatch(tok[:, :width], att[:, :width]))

    fit(model, loss, recipe.train, mask=S, desc=f"plant {recipe.kind}")
    gates = plant_gates(model, world, recipe.retain_for)
    gates["retain_model"] = gates["gate"].map(before)
    gates["gate_min"] = gates["gate"].map({"forget_trained": recipe.gate_forget,
                                           "retain_trained": before["retain_trained"] - recipe.gate_retain_drop,
                                           "retain_heldout": before["retain_heldout"] - recipe.gate_retain_drop})
    gates["passed"] = [None if pd.isna(m) else bool(e >= m) for e, m in zip(gates["exact_match"], gates["gate_min"])]
    gates.attrs["build_seconds"] = time.perf_counter() - start
    failed = gates[gates["passed"] == False]  # noqa: E712
    if len(failed):
        raise GateError(f"planted {recipe.kind} missed its gates, so it was not saved:\n{failed.to_string(index=False)}", gates)
    model.meta["weights_hash"] = model.weights_hash()
    return model, S, gates


def restore(planted: Model, S: MaskSelection) -> None:
    """Exact unlearning: write the retain model's values (``S.meta["oracle_values"]``) back on S, in place."""
    planted.set_weights(dict(S.meta["oracle_values"]), S.masks)


def planted_dir(recipe: PlantRecipe, retain_key: str) -> Path:
    return home() / "models" / f"bios-tiny-planted-{recipe.kind}-{config_hash({'recipe': asdict(recipe), 'retain': retain_key})}"


def save_planted(folder: Path, model: Model, S: MaskSelection, gates: pd.DataFrame) -> Path:
    """Save the delta on S only (the values of S, flat) and S itself beside the gate table."""
    folder.mkdir(parents=True, exist_ok=True)
    values = {f"values::{n}": model.weight(n).detach().cpu()[m].contiguous() for n, m in S.masks.items()}
    masks = {f"mask::{n}": m.to(torch.uint8).contiguous() for n, m in S.masks.items()}
    save_file({**values, **masks}, str(folder / "planted.safetensors"))
    gates.to_csv(folder / "gates.csv", index=False)
    meta = {k: v for k, v in S.meta.items() if k != "oracle_values"}
    (folder / "meta.json").write_text(json.dumps({"weights_hash": model.meta.get("weights_hash"), **meta}))
    return folder


def read_planted(folder: Path, model: Model) -> tuple[Model, MaskSelection]:
    """The planted model rebuilt in place from ``model`` (a freshly loaded retain model) and the
    saved values on S, and S (its meta holds the retain values on S)."""
    data = load_file(str(folder / "planted.safetensors"))
    masks = {k.removeprefix("mask::"): v.bool() for k, v in data.items() if k.startswith("mask::")}
    oracle = {n: model.weight(n).detach()[m].clone() for n, m in masks.items()}
    model.set_weights({n: data[f"values::{n}"] for n in masks}, masks)
    S = MaskSelection({n: m.float() for n, m in masks.items()}, masks, dict(json.loads((folder / "meta.json").read_text()), oracle_values=oracle))
    return model, S


def load_planted(kind: str, *, recipe: PlantRecipe | None = None, world_recipe=None, rebuild: bool = False) -> tuple[Model, MaskSelection]:
    """``bios-tiny-planted-<kind>``: built on first use (gated) and cached under MECHUNLEARN_HOME."""
    from mechunlearn.models.bios_tiny import BiosTinyRecipe, load, recipe_key
    from mechunlearn.world import World

    world_recipe = world_recipe or BiosTinyRecipe()
    recipe = recipe or PlantRecipe(kind=kind)
    if recipe.kind != kind:
        recipe = replace(recipe, kind=kind)
    retain = load(world_recipe, retain_for=recipe.retain_for)
    folder = planted_dir(recipe, recipe_key(world_recipe, recipe.retain_for))
    if rebuild or not (folder / "planted.safetensors").exists():
        model, S, gates = build_planted(retain, World(world_recipe.world), recipe)
        save_planted(folder, model, S, gates)
        retain = load(world_recipe, retain_for=recipe.retain_for)
    model, S = read_planted(folder, retain)
    model.model_id = f"bios-tiny-planted-{kind}"
    return model, S
