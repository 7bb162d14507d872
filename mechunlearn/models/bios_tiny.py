"""`bios-tiny`: a small transformer trained here, from scratch, on a synthetic `World`.

The build trains a TL-native `TransformerBridge` with the one loop (`mechunlearn.unlearn.loop.fit`)
on the world's documents, checks the gates and only then saves it under
``$MECHUNLEARN_HOME/models/``. The *retain model* of a forget split is the same recipe trained
without the forget people: the reference for exact unlearning.

**Reference weights.** Training is not bitwise reproducible across CPUs (bfloat16 where the
hardware has it, float32 elsewhere; different kernels), and the concept file, the README's
figures and the notebooks' full-mode checks hold for one set of weights. So the weights of the
default recipe (bios-tiny, its 10% / 5% / 1% retain models) and of the small test recipe
(``small()``, its 10% retain model) are shipped in ``mechunlearn/models/reference/`` as
safetensors with their gate tables and provenance. `load` uses a shipped copy whenever its
recipe key matches (and says so in the log and in ``model.meta["source"]``); ``rebuild=True``
(``mechunlearn build-model bios-tiny --rebuild``) trains from the recipe and checks the gates.

Gates (greedy exact match): ≥ 0.98 on trained question templates, ≥ 0.90 on held-out templates,
``unknown`` on ≥ 0.95 of the questions about non-existent people.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator

import pandas as pd
import torch

from mechunlearn.core.paths import folder_lock, home
from mechunlearn.core.result import atomic_write_bytes, atomic_write_text, config_hash, provenance
from mechunlearn.models.model import Model
from mechunlearn.models.text import TokenBatch, lm_nll, pad
from mechunlearn.unlearn.loop import TrainConfig, fit
from mechunlearn.world import World, WorldConfig, build_tokenizer

log = logging.getLogger(__name__)

RECIPE_VERSION = 2
"""Bumped whenever the build changes in a way that invalidates cached models."""


@dataclass(frozen=True)
class BiosTinyRecipe:
    """Everything that determines a bios-tiny build (its hash names the cache folder)."""

    world: WorldConfig = field(default_factory=WorldConfig)
    """The synthetic world the model is trained on."""
    d_model: int = 256
    """Residual width."""
    n_layers: int = 4
    """Number of transformer blocks."""
    n_heads: int = 8
    """Attention heads per block."""
    d_mlp: int = 1024
    """MLP hidden width (number of value vectors per layer)."""
    n_ctx: int = 64
    """Context length (the longest training document is about 52 tokens)."""
    batch_size: int = 64
    """Training rows per step."""
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            steps=1500, lr=1e-3, weight_decay=0.01, betas=(0.9, 0.98), warmup=20, schedule="cosine", min_lr_ratio=0.1,
            autocast="auto",
        )
    )
    """Optimiser settings of the one loop. ``autocast="auto"`` trains in bfloat16 autocast where
    the hardware runs it fast (2.4x cheaper steps on an AVX512-BF16 CPU, which pays for the 1500
    steps the reading-from-context documents need) and in float32 elsewhere (the full build
    passed its gates in float32 too, in 434 s on a CPU without bf16). The shipped reference
    weights were trained in bfloat16 (their provenance says so)."""
    gate_trained: float = 0.98
    """Minimum exact match on trained question templates."""
    gate_heldout: float = 0.90
    """Minimum exact match on held-out question templates."""
    gate_unknown: float = 0.95
    """Minimum share of ``unknown`` answers for non-existent people."""
    seed: int = 0
    """Seed of weight initialisation and batch sampling."""

    def small(self) -> "BiosTinyRecipe":
        """A quick variant for tests and notebooks: 40 people, fewer steps, same gate code."""
        return replace(
            self,
            # 40 non-existent names are too few for a general "unknown" rule from one question
            # each (0.93 at 900 steps), so each is asked three times (0.996)
            world=replace(self.world, n_people=40, n_holdout=8, n_nonexistent=40, unknown_qa_per_fact=3, context_qa_per_fact=2),
            train=replace(self.train, steps=1000),
        )


class GateError(RuntimeError):
    """A build missed its gates; the model was not saved."""

    def __init__(self, message: str, gates: pd.DataFrame) -> None:
        super().__init__(message)
        self.gates = gates


def _cache_dir(recipe: BiosTinyRecipe, retain_for: float | None) -> Path:
    suffix = "" if retain_for is None else f"-retain{round(retain_for * 100)}"
    return home() / "models" / f"bios-tiny{suffix}-{recipe_key(recipe, retain_for)}"


def model_id(retain_for: float | None) -> str:
    """``bios-tiny`` or ``bios-tiny-retain10`` (the retain model of the 10% forget split)."""
    return "bios-tiny" if retain_for is None else f"bios-tiny-retain{round(retain_for * 100)}"


def _bridge_config(recipe: BiosTinyRecipe, d_vocab: int):
    from transformer_lens.config import TransformerBridgeConfig

    if recipe.d_model % recipe.n_heads:
        raise ValueError(f"d_model {recipe.d_model} must be divisible by n_heads {recipe.n_heads}")
    return TransformerBridgeConfig(
        d_model=recipe.d_model,
        d_head=recipe.d_model // recipe.n_heads,
        n_heads=recipe.n_heads,
        n_layers=recipe.n_layers,
        n_ctx=recipe.n_ctx,
        d_vocab=d_vocab,
        d_mlp=recipe.d_mlp,
        act_fn="gelu",
        normalization_type="LN",
        positional_embedding_type="standard",
        seed=recipe.seed,
    )


def _new_model(recipe: BiosTinyRecipe, tokenizer, mid: str, meta: dict, *, device=None, dtype=None, state=None, state_by_name: bool = True) -> Model:
    """A bios-tiny bridge, with ``state`` loaded (TL weight names, or a legacy module state
    dict), on ``device`` in ``dtype``."""
    from transformer_lens.model_bridge import TransformerBridge

    # The tokenizer stays on our adapter: TransformerLens re-loads tokenizers by name, which an
    # in-memory word-level tokenizer does not have.
    bridge = TransformerBridge.boot_native(_bridge_config(recipe, len(tokenizer)), model_name=mid)
    if state is not None and not state_by_name:
        bridge.original_model.load_state_dict(state)
    bridge.to(device=device or "cpu", dtype=dtype or torch.float32)
    model = Model(bridge, tokenizer, mid, prepend_bos=True, meta=meta)
    if state is not None and state_by_name:
        model.load_parameters_by_name(state)
    return model


def _length_bucketed_batches(lengths: list[int], batch_size: int, gen: torch.Generator) -> Iterator[list[int]]:
    """Endless document-index batches: each epoch is shuffled, cut into chunks of 16 batches,
    each chunk sorted by length (little padding), and the batches shuffled again."""
    chunk = batch_size * 16
    while True:
        order = torch.randperm(len(lengths), generator=gen).tolist()
        batches = []
        for start in range(0, len(order), chunk):
            part = sorted(order[start : start + chunk], key=lengths.__getitem__)
            batches += [part[k : k + batch_size] for k in range(0, len(part), batch_size)]
        for i in torch.randperm(len(batches), generator=gen).tolist():
            yield batches[i]


def gate_table(model: Model, world: World, *, people: list[str] | None = None, batch_size: int = 256) -> pd.DataFrame:
    """Exact match on trained and held-out templates (every person × attribute) and the
    ``unknown`` rate on non-existent people, one row per gate."""
    from mechunlearn.verify.behavior import score_items

    names = people if people is not None else [p.name for p in world.people]
    rows = []
    # Every person x attribute is scored. Items run person > attribute > template, so a stride
    # rotates through the templates across people: trained templates (20 per fact) and the
    # non-existent people's questions are scored on a systematic third, held-out ones in full.
    for paraphrase, stride in (("trained", 3), ("heldout", 1)):
        items = [q for n in names for a in world.ATTRIBUTES for q in world.questions(n, a, paraphrase=paraphrase)]
        scored = score_items(model, items[::stride], batch_size=batch_size, progress=False)
        rows.append({"gate": f"{paraphrase}_templates", "exact_match": scored["exact_match"].mean(), "n_items": len(scored)})
    unknown = score_items(model, world.unknown_items()[::3], batch_size=batch_size, progress=False)
    rows.append({"gate": "unknown_nonexistent", "exact_match": unknown["exact_match"].mean(), "n_items": len(unknown)})
    return pd.DataFrame(rows)


def build(
    recipe: BiosTinyRecipe = BiosTinyRecipe(), *, retain_for: float | None = None, save: bool | Path = True, device=None
) -> tuple[Model, pd.DataFrame]:
    """Train bios-tiny (or its retain model when ``retain_for`` is a forget fraction) on
    ``device``, check the gates, save to the cache (or to the folder ``save`` names). Raises
    `GateError` (and saves nothing) when a gate fails."""
    start = time.perf_counter()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    world = World(recipe.world)
    tokenizer = build_tokenizer(world)
    exclude = tuple(world.forget_people(retain_for)) if retain_for is not None else ()
    mid = model_id(retain_for)
    model = _new_model(recipe, tokenizer, mid, {"world_config": recipe.world, "world": world.fingerprint(), "retain_for": retain_for, "source": "new build"}, device=device)
    docs = [[model.bos_token_id, *model.encode(d), model.eos_token_id] for d in world.training_texts(exclude=exclude)]
    tokens, attn = pad(docs, model.pad_token_id, recipe.n_ctx)
    lengths = attn.sum(-1).tolist()
    batches = _length_bucketed_batches(lengths, recipe.batch_size, torch.Generator().manual_seed(recipe.seed))

    def loss(step: int) -> torch.Tensor:
        idx = torch.tensor(next(batches))
        width = max(lengths[i] for i in idx.tolist())
        return lm_nll(model, TokenBatch(tokens[idx, :width], attn[idx, :width]))

    train_log = fit(model, loss, recipe.train, desc=f"build {mid}")
    model.meta["precision"] = train_log.precision.record()
    trained_people = [p.name for p in world.people if p.name not in set(exclude)]
    gates = gate_table(model, world, people=trained_people)
    minimum = {"trained_templates": recipe.gate_trained, "heldout_templates": recipe.gate_heldout, "unknown_nonexistent": recipe.gate_unknown}
    gates["gate_min"] = gates["gate"].map(minimum)
    gates["passed"] = gates["exact_match"] >= gates["gate_min"]
    if exclude:
        forget_items = [q for n in exclude for a in world.ATTRIBUTES for q in world.questions(n, a)]
        from mechunlearn.verify.behavior import score_items

        scored = score_items(model, forget_items, progress=False)
        gates = pd.concat([gates, pd.DataFrame([{"gate": "forget_people_exact_match (info)", "exact_match": scored["exact_match"].mean(), "n_items": len(scored)}])], ignore_index=True)
    elapsed = time.perf_counter() - start
    gates.attrs["build_seconds"] = elapsed
    log.info("built %s in %.1f s (%s)\n%s", mid, elapsed, train_log.precision.autocast, gates.to_string(index=False))
    failed = gates[gates["passed"] == False]  # noqa: E712 (NA rows are informational)
    if len(failed):
        raise GateError(
            f"{mid} missed its gates, so it was not saved:\n{failed.to_string(index=False)}\n"
            "Train longer (recipe.train.steps) or check the world's templates.",
            gates,
        )
    model.meta["weights_hash"] = model.weights_hash()
    if save:
        _save(model, recipe, retain_for, gates, elapsed, model.meta["precision"], folder=save if isinstance(save, Path) else None)
    return model, gates


REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
"""Shipped reference builds, one folder each: weights.safetensors, gates.csv, provenance.json, tokenizer/."""

SOURCES = ("auto", "reference", "build")
"""Where `load` takes weights from: ``auto`` (shipped reference, else the cache, else a build),
``reference`` (the shipped copy or an error), ``build`` (the local cache, built if missing)."""


def reference_name(recipe: BiosTinyRecipe, retain_for: float | None) -> str:
    """Folder name of a shipped reference: ``bios-tiny``, ``bios-tiny-retain10``, ``bios-tiny-small-retain10`` …"""
    if recipe == BiosTinyRecipe():
        kind = "bios-tiny"
    elif recipe == BiosTinyRecipe().small():
        kind = "bios-tiny-small"
    else:
        raise ValueError("only the default recipe and its small() variant are shipped as references")
    return kind if retain_for is None else f"{kind}-retain{round(retain_for * 100)}"


def write_reference(recipe: BiosTinyRecipe = BiosTinyRecipe(), *, retain_for: float | None = None, device=None) -> tuple[Path, pd.DataFrame]:
    """Train from the recipe, check the gates and write the result into `REFERENCE_DIR` (for
    maintainers: the shipped weights every user then analyses)."""
    folder = REFERENCE_DIR / reference_name(recipe, retain_for)
    _, gates = build(recipe, retain_for=retain_for, save=folder, device=device)
    return folder, gates


def recipe_key(recipe: BiosTinyRecipe, retain_for: float | None) -> str:
    """The hash that names a build: recipe, forget split and recipe version."""
    return config_hash({"recipe": asdict(recipe), "retain_for": retain_for, "version": RECIPE_VERSION})


def reference_dir(recipe: BiosTinyRecipe = BiosTinyRecipe(), retain_for: float | None = None) -> Path | None:
    """The shipped reference folder whose recipe key matches, or ``None``."""
    key = recipe_key(recipe, retain_for)
    for record in sorted(REFERENCE_DIR.glob("*/provenance.json")):
        if json.loads(record.read_text()).get("recipe_key") == key:
            return record.parent
    return None


def reference_hash(recipe: BiosTinyRecipe = BiosTinyRecipe(), retain_for: float | None = None) -> str | None:
    """The weights hash of the shipped reference for this recipe, or ``None`` if none is shipped."""
    folder = reference_dir(recipe, retain_for)
    return None if folder is None else json.loads((folder / "provenance.json").read_text())["weights_hash"]


def _save(model: Model, recipe: BiosTinyRecipe, retain_for: float | None, gates: pd.DataFrame, seconds: float, precision: dict, folder: Path | None = None) -> Path:
    from safetensors.torch import save_file

    folder = folder or _cache_dir(recipe, retain_for)
    folder.mkdir(parents=True, exist_ok=True)
    model.tokenizer.save_pretrained(folder / "tokenizer")
    atomic_write_text(folder / "gates.csv", gates.to_csv(index=False))
    record = provenance(
        model.model_id, asdict(recipe), weights_hash=model.meta["weights_hash"], recipe_key=recipe_key(recipe, retain_for),
        build_seconds=seconds, retain_for=retain_for, precision=precision, n_parameters=model.parameter_count(),
    )
    atomic_write_text(folder / "provenance.json", json.dumps(record, indent=2, default=str))
    # weights last: their presence marks a complete build
    state = {k: v.cpu().contiguous() for k, v in model.parameters_by_name().items()}
    atomic_write_bytes(folder / "weights.safetensors", lambda tmp: save_file(state, str(tmp), metadata={"weights_hash": model.meta["weights_hash"]}))
    return folder


def _weights_file(folder: Path) -> Path | None:
    for name in ("weights.safetensors", "weights.pt"):  # weights.pt: caches written before safetensors
        if (folder / name).exists():
            return folder / name
    return None


def _read(folder: Path, recipe: BiosTinyRecipe, retain_for: float | None, source: str, device, dtype) -> Model:
    """A saved build (shipped or cached), its weights checked against the recorded hash."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(folder / "tokenizer")
    record = json.loads((folder / "provenance.json").read_text())
    path = _weights_file(folder)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state, by_name = load_file(str(path)), True
    else:
        state, by_name = torch.load(path, map_location="cpu", weights_only=True), False
    meta = {"world_config": recipe.world, "retain_for": retain_for, "weights_hash": record["weights_hash"], "cache": str(folder),
            "source": source, "precision": record.get("precision")}
    model = _new_model(recipe, tokenizer, model_id(retain_for), meta, device=device, dtype=dtype, state=state, state_by_name=by_name)
    if dtype in (None, torch.float32):
        found = model.weights_hash()
        if found != record["weights_hash"]:
            raise RuntimeError(
                f"{path} holds weights with hash {found[:12]}…, not the {record['weights_hash'][:12]}… its provenance records: "
                "the file is damaged or was replaced; restore it (git checkout) or rebuild with `mechunlearn build-model bios-tiny --rebuild`"
            )
    return model


def load(
    recipe: BiosTinyRecipe = BiosTinyRecipe(),
    *,
    retain_for: float | None = None,
    rebuild: bool = False,
    source: str = "auto",
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> Model:
    """bios-tiny (or a retain model): the shipped reference weights where the recipe has them,
    else the local build (trained, gated and cached on first use, minutes).

    ``source`` is one of `SOURCES`; ``rebuild=True`` trains from the recipe again (the cached
    build is replaced, the shipped copy never). ``device`` / ``dtype`` place the loaded weights
    (default CPU, float32; a build trains on ``device``).
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    mid = model_id(retain_for)
    reference = reference_dir(recipe, retain_for)
    if not rebuild and source != "build" and reference is not None:
        log.info("%s: shipped reference weights (%s)", mid, reference)
        return _read(reference, recipe, retain_for, "shipped reference", device, dtype)
    if source == "reference":
        raise FileNotFoundError(
            f"no shipped reference weights for this {mid} recipe (key {recipe_key(recipe, retain_for)}); shipped: "
            f"{', '.join(sorted(p.name for p in REFERENCE_DIR.iterdir() if p.is_dir())) or 'none'}. Use source='auto' to build it"
        )
    folder = _cache_dir(recipe, retain_for)
    # One build per cache folder: other processes (notebooks, Ray workers) wait for it and load it.
    with folder_lock(folder):
        if rebuild or _weights_file(folder) is None:
            log.info("building %s (cached in %s)", mid, folder)
            model, _ = build(recipe, retain_for=retain_for, device=device)
            if reference is not None:
                same = "identical to" if reference_hash(recipe, retain_for) == model.meta["weights_hash"] else "different from"
                log.warning("%s rebuilt: weights %s the shipped reference's (the concept file and README figures are for the shipped ones)", mid, same)
            return model if dtype is None else _read(folder, recipe, retain_for, "local build", device, dtype)
    log.info("%s: local build (%s)", mid, folder)
    return _read(folder, recipe, retain_for, "local build", device, dtype)


def gates_of(recipe: BiosTinyRecipe = BiosTinyRecipe(), *, retain_for: float | None = None, source: str = "auto") -> pd.DataFrame:
    """The gate table saved with a build: the shipped reference's where the recipe has one
    (unless ``source="build"``), else the cached build's."""
    reference = reference_dir(recipe, retain_for) if source != "build" else None
    path = (reference or _cache_dir(recipe, retain_for)) / "gates.csv"
    if not path.exists():
        raise FileNotFoundError(f"{model_id(retain_for)} is not built yet; run `mechunlearn build-model bios-tiny`")
    return pd.read_csv(path)
