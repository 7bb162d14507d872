"""Planted knowledge (issue 14, §1): models whose forget facts live in a known component set S.

Start from the retain model of a split (it never saw the forget people) and teach it the
forget people's documents (bios, trained-template QA) by training **only** S through the one
loop (`mechunlearn.unlearn.loop.fit` with a mask), replaying retain documents so retain facts
stay. Outside S the weights are bit for bit the retain model's, so the retain model is the
exact-unlearning oracle and restoring S *is* exact unlearning.

Plant types (`plant_mask`): ``neurons`` (k MLP hidden units of one layer: W_in columns, b_in
entries, W_out rows), ``layer`` (one whole MLP layer), ``sparse`` (a random 1% of the entries
of every block weight), ``heads`` (a few attention heads of one layer: their W_Q/W_K/W_V/W_O
slices and biases), ``low_rank`` (a rank-r delta on one matrix: S is the whole matrix; rank-r
LoRA factors are trained through the loop's ``extra`` tensors and merged into the weight, so the
delta is ``U @ V`` of rank ≤ r, the factors in ``S.meta["factors"]``). Recipes per type:
`DEFAULT_RECIPES`.

``load_model("bios-tiny-planted-<type>")`` (`load_planted`) builds, gates and caches a planted
model on first use; S is `planted_selection(model)` (``model.meta["planted_selection"]``), and
``restore(model, S)`` turns it into the oracle bit for bit.

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

from mechunlearn.core.paths import folder_lock, home
from mechunlearn.core.result import atomic_write_bytes, atomic_write_text, config_hash
from mechunlearn.core.selection import MaskSelection
from mechunlearn.models.model import Model
from mechunlearn.models.text import TokenBatch, lm_nll, pad
from mechunlearn.unlearn.loop import TrainConfig, fit

log = logging.getLogger(__name__)

PLANT_TYPES = ("neurons", "layer", "sparse", "heads", "low_rank")


@dataclass(frozen=True)
class PlantRecipe:
    """Everything that determines a planted model (its hash names the cache folder)."""

    kind: str = "layer"
    """One of `PLANT_TYPES`."""
    layer: int = 1
    """The block that holds S (``neurons``, ``layer``, ``heads``)."""
    k: int = 256
    """Neurons (``neurons``) in S, or heads per block (``heads``)."""
    heads_layers: tuple[int, ...] | None = None
    """The blocks whose heads hold S (``heads``; ``None``: ``(layer,)``): ``k`` heads drawn in each."""
    density: float = 0.01
    """Share of block-weight entries in S (``sparse``)."""
    rank: int = 8
    """Rank r of the planted delta (``low_rank``)."""
    matrix: str = "mlp.W_out"
    """The matrix of block ``layer`` that carries the rank-r delta (``low_rank``): an
    ``nn.Linear`` weight (``mlp.W_in``, ``mlp.W_out``, ``attn.W_O`` …)."""
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
        if self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")


def _train(steps: int, lr: float) -> TrainConfig:
    # float32, not "auto": a planted model is a ground truth, the same on every CPU (bfloat16
    # autocast would make it depend on the machine's bf16 support).
    return TrainConfig(steps=steps, lr=lr, warmup=10, schedule="cosine", min_lr_ratio=0.1, autocast="float32")


DEFAULT_RECIPES: dict[str, PlantRecipe] = {
    "neurons": PlantRecipe(kind="neurons", layer=1, k=128, train=_train(300, 1e-2)),
    "layer": PlantRecipe(kind="layer", layer=1, train=_train(150, 3e-3)),
    "sparse": PlantRecipe(kind="sparse", density=0.02, replay=0.7, train=_train(400, 3e-2)),
    "heads": PlantRecipe(kind="heads", layer=1, k=2, train=_train(300, 1e-2)),
    "low_rank": PlantRecipe(kind="low_rank", layer=1, matrix="mlp.W_out", rank=32, replay=0.8, train=_train(400, 1e-2)),
}
"""The recipe of each plant type (what `load_model("bios-tiny-planted-<type>")` builds).

Measured on the small world (``BiosTinyRecipe().small()``, 4 forget people, 10% split; float32,
2 torch threads; `build_planted` seconds incl. the gates; retain model: forget 0.027, retain
trained 0.987, held-out 0.982; gates: forget trained ≥ 0.95, retain ≥ retain model − 0.02):

=========  ==========================================  =====  ======  =======  =======  ====
type       recipe                                      steps  forget  retain   retain   s
                                                                      trained  heldout
=========  ==========================================  =====  ======  =======  =======  ====
neurons    k=128 of layer 1, lr 1e-2, replay 0.7       300    0.988   0.981    0.976    74
layer      layer 1, lr 3e-3, replay 0.7                150    0.969   0.978    —        44
low_rank   r=32 on blocks.1.mlp.W_out, lr 1e-2, 0.8    400    0.960   0.976    0.970    209*
sparse     2% of every block weight, lr 3e-2, 0.7      400    0.952   0.980    0.970    —
=========  ==========================================  =====  ======  =======  =======  ====

(* the CPU was shared during that run.) A 1% sparse plant plateaus below the forget gate on the
small world (below); on the default world 1% passes (`FULL_WORLD_RECIPES`). Misses that set these choices: low_rank r=8 (300
steps, replay 0.7) forget 0.938, retain 0.963; r=16 (replay 0.8) forget 0.944, held-out retain
0.9620 against 0.9624. Misses of ``heads`` and of 1% ``sparse`` (forget trained / retain
trained / retain held-out, small world): heads k=2, 300 steps, replay 0.7: 0.929 / 0.964 /
0.959; k=4, 400 steps, replay 0.8: 0.867 / 0.968 / 0.952; k=4, 400 steps, replay 0.7: 0.885 /
0.962 / 0.957; k=4 of layer 2 (lr 1e-2, 400 steps): 0.856 / 0.951 / 0.955; of layer 3: 0.829 /
0.949 / 0.948; all 8 heads of layer 1 (lr 3e-3, 400 steps): 0.873 / 0.974 / 0.969; k=4 of layer 1
(lr 3e-3, 600 steps): 0.917 / 0.978 / 0.968; 2 heads in each of the 4 blocks (lr 1e-2, 400
steps): 0.940 / 0.910 / 0.901; sparse 1%, 300 steps, replay 0.7: 0.942 / 0.9667 (gate 0.9668) / 0.957; 400
steps, replay 0.8: 0.923 / 0.974 / 0.964; the same at lr 3e-2: 0.935 / 0.977 / 0.966 (retain
passes, forget short), at 600 steps 0.935 / 0.977 / 0.969 (forget plateaus: a larger
density or a lower replay share is next: 2% at replay 0.7 passes); heads k=2 at lr 2e-2: 0.869 / 0.933 / 0.918 (worse;
attention heads are a poor store for these facts). The ``heads`` row is the nearest miss and
raises `GateError` when built on the small world. The default world: `FULL_WORLD_RECIPES`."""


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
        for block in recipe.heads_layers or (L,):
            if not 0 <= block < n_layers:
                raise ValueError(f"heads_layers has block {block}, out of range for a {n_layers}-layer model")
            n_heads = model.weight(f"blocks.{block}.attn.W_Q").shape[0]
            if not 0 < recipe.k <= n_heads:
                raise ValueError(f"k must be in 1..{n_heads} heads, got {recipe.k}")
            heads = torch.zeros(n_heads, dtype=torch.bool)
            heads[torch.randperm(n_heads, generator=gen)[: recipe.k]] = True
            for w in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V"):
                shape = model.weight(f"blocks.{block}.attn.{w}").shape
                masks[f"blocks.{block}.attn.{w}"] = heads.view(-1, *([1] * (len(shape) - 1))).expand(shape).clone()
    elif recipe.kind == "low_rank":
        name = f"blocks.{L}.{recipe.matrix}"
        shape = model.weight(name).shape
        if len(shape) != 2:
            raise ValueError(f"low_rank plants into a 2-D matrix; {name} has shape {tuple(shape)}")
        if not 0 < recipe.rank < min(shape):
            raise ValueError(f"rank must be in 1..{min(shape) - 1} for {name} {tuple(shape)}, got {recipe.rank}")
        masks[name] = torch.ones(shape, dtype=torch.bool)
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


def build_planted(model: Model, world, recipe: PlantRecipe, *, check_gates: bool = True) -> tuple[Model, MaskSelection, pd.DataFrame]:
    """Plant the forget people's documents into ``model`` (a freshly loaded retain model, trained
    in place) through S only; check the gates (raises `mechunlearn.models.bios_tiny.GateError`
    when one fails, unless ``check_gates=False``: tests of the mechanics at a few steps).
    ``S.meta["oracle_values"]`` holds the retain model's values on S."""
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

    if recipe.kind == "low_rank":
        S = MaskSelection(S.scores, S.masks, dict(S.meta, factors=_fit_low_rank(model, loss, recipe, S)))
    else:
        fit(model, loss, recipe.train, mask=S, desc=f"plant {recipe.kind}")
    gates = plant_gates(model, world, recipe.retain_for)
    gates["retain_model"] = gates["gate"].map(before)
    gates["gate_min"] = gates["gate"].map({"forget_trained": recipe.gate_forget,
                                           "retain_trained": before["retain_trained"] - recipe.gate_retain_drop,
                                           "retain_heldout": before["retain_heldout"] - recipe.gate_retain_drop})
    gates["passed"] = [None if pd.isna(m) else bool(e >= m) for e, m in zip(gates["exact_match"], gates["gate_min"])]
    gates.attrs["build_seconds"] = time.perf_counter() - start
    failed = gates[gates["passed"] == False]  # noqa: E712
    if len(failed) and check_gates:
        raise GateError(f"planted {recipe.kind} missed its gates, so it was not saved:\n{failed.to_string(index=False)}", gates)
    model.meta["weights_hash"] = model.weights_hash()
    return model, S, gates


def _fit_low_rank(model: Model, loss, recipe: PlantRecipe, S: MaskSelection) -> dict[str, torch.Tensor]:
    """Train rank-r factors on S's one matrix through the one loop (LoRA hooks, ``fit``'s
    ``extra``), then merge them into the weight: the planted delta is ``U @ V`` (TL layout,
    ``U`` [rows, r], ``V`` [r, cols]), of rank ≤ r by construction. Returns ``{"U", "V"}``."""
    from mechunlearn.verify.attacks import lora_adapters

    (name,) = S.names
    spec = model.weight_spec(name)
    with lora_adapters(model, [name], recipe.rank, recipe.seed) as factors:
        fit(model, loss, recipe.train, weights=[], extra=factors, desc=f"plant {recipe.kind}")
    a, b = (f.detach().clone() for f in factors)  # nn.Linear layout: ΔW = B @ A, [out, in]
    with torch.no_grad():
        spec.param.add_(b @ a)
    probe = torch.arange(spec.param.numel()).view(spec.param.shape)
    transposed = not torch.equal(spec.to_tl(probe), probe)
    u, v = (a.T.contiguous(), b.T.contiguous()) if transposed else (b, a)
    return {"U": u.cpu(), "V": v.cpu()}


def restore(planted: Model, S: MaskSelection) -> None:
    """Exact unlearning: write the retain model's values (``S.meta["oracle_values"]``) back on S, in place."""
    planted.set_weights(dict(S.meta["oracle_values"]), S.masks)


def planted_dir(recipe: PlantRecipe, retain_key: str) -> Path:
    return home() / "models" / f"bios-tiny-planted-{recipe.kind}-{config_hash({'recipe': asdict(recipe), 'retain': retain_key})}"


def save_planted(folder: Path, model: Model, S: MaskSelection, gates: pd.DataFrame) -> Path:
    """Save the values on S only (flat), S itself (its masks), a low-rank plant's factors and
    the gate table; ``planted.safetensors`` is written last, so its presence marks a complete build."""
    folder.mkdir(parents=True, exist_ok=True)
    values = {f"values::{n}": model.weight(n).detach().cpu()[m].contiguous() for n, m in S.masks.items()}
    masks = {f"mask::{n}": m.to(torch.uint8).contiguous() for n, m in S.masks.items()}
    factors = {f"factor::{k}": v.contiguous() for k, v in S.meta.get("factors", {}).items()}
    atomic_write_text(folder / "gates.csv", gates.to_csv(index=False))
    meta = {k: v for k, v in S.meta.items() if k not in ("oracle_values", "factors")}
    record = {"weights_hash": model.meta.get("weights_hash"), "build_seconds": gates.attrs.get("build_seconds"), **meta}
    atomic_write_text(folder / "meta.json", json.dumps(record, default=str))
    atomic_write_bytes(folder / "planted.safetensors", lambda tmp: save_file({**values, **masks, **factors}, str(tmp)))
    return folder


def read_planted(folder: Path, model: Model) -> tuple[Model, MaskSelection]:
    """The planted model rebuilt in place from ``model`` (a freshly loaded retain model) and the
    saved values on S, and S (its meta holds the retain values on S, ``oracle_values``, and for
    ``low_rank`` the factors ``U``, ``V`` of the delta)."""
    data = load_file(str(folder / "planted.safetensors"))
    saved = {k.removeprefix("mask::"): v.bool() for k, v in data.items() if k.startswith("mask::")}
    masks = {n: saved[n] for n in model.weight_names() if n in saved}  # model order, as plant_mask gives it
    if len(masks) != len(saved):
        raise ValueError(f"{folder}: S names weights this model lacks: {sorted(set(saved) - set(masks))[:4]}")
    oracle = {n: model.weight(n).detach()[m.to(model.device)].clone() for n, m in masks.items()}
    model.set_weights({n: data[f"values::{n}"] for n in masks}, masks)
    meta = json.loads((folder / "meta.json").read_text())
    factors = {k.removeprefix("factor::"): v for k, v in data.items() if k.startswith("factor::")}
    exact = all(model.weight(n).dtype == torch.float32 for n in masks)
    if exact and meta.get("weights_hash") and model.weights_hash() != meta["weights_hash"]:
        raise RuntimeError(f"{folder}: the planted weights do not hash to the recorded {meta['weights_hash'][:12]}…; "
                           "the retain model or the file changed: rebuild with load_planted(kind, rebuild=True)")
    S = MaskSelection({n: m.float() for n, m in masks.items()}, masks, dict(meta, oracle_values=oracle, **({"factors": factors} if factors else {})))
    return model, S


FULL_WORLD_RECIPES: dict[str, PlantRecipe] = {
    "layer": replace(DEFAULT_RECIPES["layer"], train=_train(400, 3e-3)),
    "sparse": replace(DEFAULT_RECIPES["sparse"], density=0.01, train=_train(800, 3e-2)),
    "low_rank": replace(DEFAULT_RECIPES["low_rank"], train=_train(800, 1e-2)),
    "heads": replace(DEFAULT_RECIPES["heads"], heads_layers=(0, 1, 2, 3), k=2, train=_train(800, 3e-3)),
}
"""Recipes for the default 200-person world where the small world's are not enough: its 20 forget
people have five times the documents, so the same number of steps is a fifth of the epochs.
Measured (float32, 2 threads; the default world's retain model: forget 0.006, retain trained
0.996, held-out 0.991; gates: forget ≥ 0.95, retain trained ≥ 0.976, held-out ≥ 0.971):

=========  =========================================  =====  ======  =======  =======  =======  ====
type       recipe                                     steps  forget  forget   retain   retain   s
                                                             trained heldout  trained  heldout
=========  =========================================  =====  ======  =======  =======  =======  ====
layer      layer 1, lr 3e-3, replay 0.7               400    0.999   0.998    0.994    0.989    119
neurons    k=128 of layer 1 (`DEFAULT_RECIPES`)        300    0.994   0.993    0.989    0.984    92
low_rank   r=32 on blocks.1.mlp.W_out, lr 1e-2, 0.8   800    0.986   0.977    0.990    0.980    219
sparse     1% of every block weight, lr 3e-2, 0.7     800    0.992   0.977    0.981    0.976    343
heads      2 heads in each of the 4 blocks, lr 3e-3   800    0.991   0.987    0.992    0.988    279
=========  =========================================  =====  ======  =======  =======  =======  ====

(2% sparse at 800 steps: 0.997 / 0.992 / 0.991 / 0.989 in 317 s.) Heads in one block do not pass
on the small world (`DEFAULT_RECIPES`); spread over every block at a lower learning rate and for
longer, eight of the 32 heads hold the default world's 20 people."""


def default_recipe(kind: str, world_recipe=None) -> PlantRecipe:
    """The gated default recipe of a plant type on ``world_recipe``'s world (`FULL_WORLD_RECIPES`
    on any world but the small one, where measured, else `DEFAULT_RECIPES`); unknown types list
    the known ones."""
    from mechunlearn.models.bios_tiny import BiosTinyRecipe

    if kind not in DEFAULT_RECIPES:
        raise ValueError(f"unknown plant type {kind!r}; choose one of {', '.join(PLANT_TYPES)}")
    if kind in FULL_WORLD_RECIPES and (world_recipe or BiosTinyRecipe()) != BiosTinyRecipe().small():
        return FULL_WORLD_RECIPES[kind]
    return DEFAULT_RECIPES[kind]


def load_planted(kind: str, *, recipe: PlantRecipe | None = None, world_recipe=None, rebuild: bool = False, device=None, dtype=None) -> tuple[Model, MaskSelection]:
    """``bios-tiny-planted-<kind>`` and its S: built on first use (gated; `GateError` when a gate
    fails, nothing saved but the gate table: a later load raises the recorded miss at once, unless
    ``rebuild``) and cached under MECHUNLEARN_HOME, one build per cache folder.

    ``recipe`` defaults to ``DEFAULT_RECIPES[kind]``; ``world_recipe`` to the default bios-tiny
    (``BiosTinyRecipe().small()`` for the 40-person test world). The model's ``meta`` holds S
    (``"planted_selection"``, read it with `planted_selection`), the recipe and the gate table.
    """
    from mechunlearn.models.bios_tiny import BiosTinyRecipe, GateError, load, recipe_key
    from mechunlearn.world import World

    world_recipe = world_recipe or BiosTinyRecipe()
    recipe = recipe or default_recipe(kind, world_recipe)
    if recipe.kind != kind:
        recipe = replace(recipe, kind=kind)
    folder = planted_dir(recipe, recipe_key(world_recipe, recipe.retain_for))
    missed = folder / "gates_missed.csv"
    with folder_lock(folder):
        if missed.exists() and not rebuild:
            recorded = pd.read_csv(missed)
            raise GateError(f"bios-tiny-planted-{kind} missed its gates when this recipe was built (recorded in {missed}); "
                            f"change the recipe, or rebuild with load_planted({kind!r}, rebuild=True):\n{recorded.to_string(index=False)}",
                            recorded)
        if rebuild or not (folder / "planted.safetensors").exists():
            log.info("building bios-tiny-planted-%s (cached in %s)", kind, folder)
            try:
                model, S, gates = build_planted(load(world_recipe, retain_for=recipe.retain_for), World(world_recipe.world), recipe)
            except GateError as miss:  # the measured miss is kept: the next load reports it at once
                folder.mkdir(parents=True, exist_ok=True)
                atomic_write_text(missed, miss.gates.to_csv(index=False))
                raise
            missed.unlink(missing_ok=True)
            save_planted(folder, model, S, gates)
            log.info("built bios-tiny-planted-%s in %.1f s\n%s", kind, gates.attrs["build_seconds"], gates.to_string(index=False))
    model, S = read_planted(folder, load(world_recipe, retain_for=recipe.retain_for, device=device, dtype=dtype))
    model.model_id = f"bios-tiny-planted-{kind}"
    model.meta.update(weights_hash=model.weights_hash(), retain_for=None, forget_split=recipe.retain_for, source="planted", cache=str(folder),
                      planted_recipe=recipe, planted_gates=pd.read_csv(folder / "gates.csv"), planted_selection=S)
    return model, S


def planted_selection(model: Model) -> MaskSelection:
    """S of a planted model from `load_model("bios-tiny-planted-<type>")`: the `MaskSelection`
    of the weights its forget facts were planted through (``S.meta["oracle_values"]``: the retain
    model's values there, so `restore` is exact unlearning)."""
    S = model.meta.get("planted_selection")
    if S is None:
        raise ValueError(f"{model.model_id} is not a planted model; load one with load_model('bios-tiny-planted-<type>'), types: {', '.join(PLANT_TYPES)}")
    return S
