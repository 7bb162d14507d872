"""`bios-tiny`: a small transformer trained here, from scratch, on a synthetic `World`.

The build trains a TL-native `TransformerBridge` with the one loop (`mechunlearn.unlearn.loop.fit`)
on the world's documents, checks the gates and only then saves it under
``$MECHUNLEARN_HOME/models/``. The *retain model* of a forget split is the same recipe trained
without the forget people: the reference for exact unlearning.

Gates (greedy exact match): ≥ 0.98 on trained question templates, ≥ 0.90 on held-out templates,
``unknown`` on ≥ 0.95 of the questions about non-existent people.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator

import pandas as pd
import torch

from mechunlearn.core.paths import home
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
            autocast="bfloat16",
        )
    )
    """Optimiser settings of the one loop. Mixed precision (bfloat16 matmuls, float32 weights)
    makes a step 2.4x cheaper on this machine, which pays for the 1500 steps the world needs
    since it teaches reading from the context (1200 float32 steps: trained 0.959, unknown 0.946)."""
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
    key = config_hash({"recipe": asdict(recipe), "retain_for": retain_for, "version": RECIPE_VERSION})
    suffix = "" if retain_for is None else f"-retain{round(retain_for * 100)}"
    return home() / "models" / f"bios-tiny{suffix}-{key}"


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


def _new_model(recipe: BiosTinyRecipe, tokenizer, mid: str, meta: dict) -> Model:
    from transformer_lens.model_bridge import TransformerBridge

    # The tokenizer stays on our adapter: TransformerLens re-loads tokenizers by name, which an
    # in-memory word-level tokenizer does not have.
    bridge = TransformerBridge.boot_native(_bridge_config(recipe, len(tokenizer)), model_name=mid)
    return Model(bridge, tokenizer, mid, prepend_bos=True, meta=meta)


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


def build(recipe: BiosTinyRecipe = BiosTinyRecipe(), *, retain_for: float | None = None, save: bool = True) -> tuple[Model, pd.DataFrame]:
    """Train bios-tiny (or its retain model when ``retain_for`` is a forget fraction), check the
    gates, save to the cache. Raises `GateError` (and saves nothing) when a gate fails."""
    start = time.perf_counter()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    world = World(recipe.world)
    tokenizer = build_tokenizer(world)
    exclude = tuple(world.forget_people(retain_for)) if retain_for is not None else ()
    mid = model_id(retain_for)
    model = _new_model(recipe, tokenizer, mid, {"world_config": recipe.world, "world": world.fingerprint(), "retain_for": retain_for})
    docs = [[model.bos_token_id, *model.encode(d), model.eos_token_id] for d in world.training_texts(exclude=exclude)]
    tokens, attn = pad(docs, model.pad_token_id, recipe.n_ctx)
    lengths = attn.sum(-1).tolist()
    batches = _length_bucketed_batches(lengths, recipe.batch_size, torch.Generator().manual_seed(recipe.seed))

    def loss(step: int) -> torch.Tensor:
        idx = torch.tensor(next(batches))
        width = max(lengths[i] for i in idx.tolist())
        return lm_nll(model, TokenBatch(tokens[idx, :width], attn[idx, :width]))

    fit(model, loss, recipe.train, desc=f"build {mid}")
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
    log.info("built %s in %.1f s\n%s", mid, elapsed, gates.to_string(index=False))
    failed = gates[gates["passed"] == False]  # noqa: E712 (NA rows are informational)
    if len(failed):
        raise GateError(
            f"{mid} missed its gates, so it was not saved:\n{failed.to_string(index=False)}\n"
            "Train longer (recipe.train.steps) or check the world's templates.",
            gates,
        )
    model.meta["weights_hash"] = model.weights_hash()
    if save:
        _save(model, recipe, retain_for, gates, elapsed)
    return model, gates


def _save(model: Model, recipe: BiosTinyRecipe, retain_for: float | None, gates: pd.DataFrame, seconds: float) -> Path:
    folder = _cache_dir(recipe, retain_for)
    folder.mkdir(parents=True, exist_ok=True)
    model.tokenizer.save_pretrained(folder / "tokenizer")
    atomic_write_text(folder / "gates.csv", gates.to_csv(index=False))
    record = provenance(model.model_id, asdict(recipe), weights_hash=model.meta["weights_hash"], build_seconds=seconds, retain_for=retain_for)
    atomic_write_text(folder / "provenance.json", json.dumps(record, indent=2, default=str))
    # weights last: their presence marks a complete build
    atomic_write_bytes(folder / "weights.pt", lambda tmp: torch.save(model.bridge.original_model.state_dict(), tmp))
    return folder


@contextlib.contextmanager
def _build_lock(folder: Path):
    """An exclusive lock file beside the cache folder (``fcntl.flock``; released on exit or crash)."""
    import fcntl

    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load(recipe: BiosTinyRecipe = BiosTinyRecipe(), *, retain_for: float | None = None, rebuild: bool = False) -> Model:
    """The cached bios-tiny (or retain model); built (minutes) on first use."""
    from transformers import PreTrainedTokenizerFast

    folder = _cache_dir(recipe, retain_for)
    # One build per cache folder: other processes (notebooks, Ray workers) wait for it and load it.
    with _build_lock(folder):
        if rebuild or not (folder / "weights.pt").exists():
            log.info("building %s (first use; cached in %s)", model_id(retain_for), folder)
            model, _ = build(recipe, retain_for=retain_for)
            return model
    tokenizer = PreTrainedTokenizerFast.from_pretrained(folder / "tokenizer")
    record = json.loads((folder / "provenance.json").read_text())
    model = _new_model(recipe, tokenizer, model_id(retain_for), {"world_config": recipe.world, "retain_for": retain_for, "weights_hash": record["weights_hash"], "cache": str(folder)})
    state = torch.load(folder / "weights.pt", map_location="cpu", weights_only=True)
    model.bridge.original_model.load_state_dict(state)
    return model


def gates_of(recipe: BiosTinyRecipe = BiosTinyRecipe(), *, retain_for: float | None = None) -> pd.DataFrame:
    """The gate table saved with a cached build."""
    path = _cache_dir(recipe, retain_for) / "gates.csv"
    if not path.exists():
        raise FileNotFoundError(f"{model_id(retain_for)} is not built yet; run `mechunlearn build-model bios-tiny`")
    return pd.read_csv(path)
