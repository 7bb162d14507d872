"""SAE features: train a sparse autoencoder with SAELens at one site, select the latents that fire
on the forget data, and clamp them negatively (Farrell, Lau & Conmy 2024, "Applying sparse
autoencoders to unlearn knowledge in language models").

| function / class        | what it does                                                                  |
| ----------------------- | ----------------------------------------------------------------------------- |
| `SAETrainConfig`        | site, architecture (``topk`` / ``standard``), width, sparsity, optimiser       |
| `train_sae`             | cache the site's activations on local texts, train with SAELens' `SAETrainer`  |
| `SparseAutoencoder`     | the trained SAELens SAE + its site; ``encode``/``decode``/``W_dec``; ``save``/``load`` |
| `world_corpus` / `generated_corpus` | local training texts: the world's documents; model-generated text + concept texts |
| `sae_quality`           | explained variance, L0, dead fraction, LM loss with the SAE spliced in (`Result`) |
| `feature_frequencies`   | per-latent firing frequency and mean activation on a list of texts            |
| `SAEFeatureFrequency`   | localizer: firing frequency on forget minus on retain → `Selection` of ``sae:`` sites |
| `decoder_overlap` / `neuron_overlap` | MLP neurons scored by their W_out rows' overlap with chosen latents' decoder directions |
| `FeatureClamp`          | the edit: conditional negative clamping in delta form (``mode="zero"``: ablation) |
| `clamp_sweep`           | exact match per split over clamp values × numbers of features × modes          |

Training runs SAELens' own training step (`sae_lens.SAETrainer.step`, its TopK or L1 SAE, its
dead-latent bookkeeping and activation-norm scaling) over an in-memory source of *our* cached
activations: nothing is downloaded. The result is converted to SAELens' inference SAE (decoder
norms and the norm scaling folded in), so ``decode(f) = f @ W_dec + b_dec`` exactly.

**Clamping** (Farrell et al. §3): at every token where a selected latent is active (``f_i > 0``)
it is set to ``-c``; the activation gets only the change ``Σ_i (f'_i - f_i) · W_dec[i]``, so the
SAE's reconstruction error is kept (the model sees ``x + Δ``, not the SAE's reconstruction).
Zero-ablation (``f'_i = 0``), which the paper found ineffective, is the comparator.

>>> sae = train_sae(model, world_corpus(model), SAETrainConfig(hook="blocks.2.hook_resid_post"))
>>> model.attach("sae", sae.hook, sae)
>>> sel = SAEFeatureFrequency(hook=sae.hook).locate(model, target)       # scores only
>>> with FeatureClamp(sae, sel.top(8), value=20.0).applied(model):
...     behavior(model, target)
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Iterator, Literal, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from mechunlearn.core.edit import Edit, EditHandle, HookEdit
from mechunlearn.core.result import Result, atomic_write_dir, atomic_write_text, provenance
from mechunlearn.core.selection import Selection
from mechunlearn.core.site import Site
from mechunlearn.locate.registry import LOCALIZERS
from mechunlearn.models.text import TokenBatch, chunks, lm_nll, pad

if TYPE_CHECKING:
    from mechunlearn.models.model import Model
    from mechunlearn.world.target import Item, Target

log = logging.getLogger(__name__)

_META_FILE = "mechunlearn_sae.json"
_FORMAT = 1
Architecture = Literal["topk", "standard"]


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class SAETrainConfig:
    """How to train an SAE at one site (SAELens architectures, our cached activations)."""

    hook: str = "blocks.2.hook_resid_post"
    """The hook site whose activations the SAE reconstructs."""
    architecture: Architecture = "topk"
    """``topk`` (Gao et al. 2024: exactly ``k`` latents per token, dead latents revived by the
    AuxK loss) or ``standard`` (ReLU with an L1 penalty, the SAEs of Farrell et al.)."""
    d_sae: int = 2048
    """Number of latents."""
    k: int = 16
    """Active latents per token (``topk`` only)."""
    l1_coefficient: float = 5.0
    """L1 penalty weight (``standard`` only); activations are scaled to mean norm √d_in first."""
    lr: float = 1e-3
    """Adam learning rate (SAELens' trainer; decays to ``lr / 10`` by cosine annealing)."""
    batch_size: int = 1024
    """Tokens per training step."""
    steps: int = 2000
    """Training steps (each draws a batch from shuffled epochs over the cached tokens)."""
    dead_feature_window: int = 200
    """Steps without firing after which a latent counts as dead (AuxK revives those)."""
    skip_bos: bool = True
    """Leave the first token out of training and out of every splice/edit (its activation passes
    through unchanged): BOS, or in models without BOS (smollm2) the first token, which serves as
    the attention sink and has an outlier activation norm."""
    max_tokens: int | None = 400_000
    """Cap on cached training tokens (a seeded subset of the texts; ``None``: all)."""
    normalize: bool = True
    """Scale activations to mean norm √d_in during training (SAELens' ``expected_average_only_in``),
    folded into the weights afterwards, so one learning rate fits bios-tiny and smollm2."""
    seed: int = 0
    """Seed of the initialisation, the text subset and the batch order."""

    def __post_init__(self) -> None:
        if self.architecture not in ("topk", "standard"):
            raise ValueError(f"architecture must be 'topk' or 'standard', got {self.architecture!r}")
        for name in ("d_sae", "k", "batch_size", "steps", "dead_feature_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"SAETrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.architecture == "topk" and self.k > self.d_sae:
            raise ValueError(f"k = {self.k} active latents cannot exceed d_sae = {self.d_sae}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.l1_coefficient < 0:
            raise ValueError(f"l1_coefficient must be >= 0, got {self.l1_coefficient}")
        if self.max_tokens is not None and self.max_tokens < self.batch_size:
            raise ValueError(f"max_tokens ({self.max_tokens}) must be at least one batch ({self.batch_size})")
        site = Site.parse(self.hook)
        if site.kind != "hook" or site.index:
            raise ValueError(f"an SAE is trained at a whole hook site such as blocks.2.hook_resid_post, got {self.hook!r}")


# --------------------------------------------------------------------------- the module


class SparseAutoencoder(torch.nn.Module):
    """A trained SAELens inference SAE at one hook site of one model.

    ``encode(x) -> f`` (``[..., n_latents]``), ``decode(f) = f @ W_dec + b_dec``; ``n_latents``
    makes it attachable (``model.attach("sae", sae.hook, sae)``), so latents have sites
    ``sae:<hook>[i]``. Parameters never require gradients.
    """

    def __init__(self, sae, hook: str, meta: Mapping | None = None) -> None:
        super().__init__()
        self.sae = sae
        self.hook = hook
        self.meta = dict(meta or {})
        for p in self.sae.parameters():
            p.requires_grad_(False)

    @property
    def n_latents(self) -> int:
        return int(self.sae.cfg.d_sae)

    @property
    def d_in(self) -> int:
        return int(self.sae.cfg.d_in)

    @property
    def W_dec(self) -> Float[Tensor, "latents d_in"]:
        """Decoder directions (row ``i`` is latent ``i``'s contribution per unit activation)."""
        return self.sae.W_dec

    @property
    def b_dec(self) -> Float[Tensor, "d_in"]:
        return self.sae.b_dec

    @property
    def skip_bos(self) -> bool:
        return bool(self.meta.get("config", {}).get("skip_bos", True))

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... latents"]:
        """Latent activations (SAELens' encoder)."""
        self._check_width(x)
        return self.sae.encode(x.to(self.W_dec.dtype))

    def decode(self, f: Float[Tensor, "... latents"]) -> Float[Tensor, "... d_in"]:
        """Reconstruction ``f @ W_dec + b_dec``."""
        return self.sae.decode(f)

    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_in"]:
        """The reconstruction of ``x``."""
        return self.decode(self.encode(x))

    def _check_width(self, x: Tensor) -> None:
        if x.shape[-1] != self.d_in:
            raise ValueError(f"the SAE at {self.hook} reads width {self.d_in}, got activations of width {x.shape[-1]}")

    def check_model(self, model: "Model") -> None:
        """Raise if the SAE was trained on another model or site shape."""
        mid = self.meta.get("model_id")
        if mid is not None and mid != model.model_id:
            raise ValueError(f"this SAE was trained on {mid!r}, not on {model.model_id!r}; train one for this model")
        model.check_site(Site("hook", self.hook))
        wh, mine = self.meta.get("weights_hash"), model.meta.get("weights_hash")
        if wh and mine and wh != mine:
            log.warning("the SAE at %s was trained on other weights of %s (hash %s…, model %s…)", self.hook, mid, wh[:8], mine[:8])

    # ----- persistence
    def save(self, path: str | Path) -> Path:
        """Write SAELens' files (``cfg.json``, ``sae_weights.safetensors``) plus our metadata to the
        folder ``path``, atomically (a temp folder renamed into place)."""
        def write(folder: Path) -> None:
            self.sae.save_model(folder)
            record = {"format": _FORMAT, "hook": self.hook, **self.meta}
            atomic_write_text(folder / _META_FILE, json.dumps(record, indent=2, default=str))

        return atomic_write_dir(path, write)

    @classmethod
    def load(cls, path: str | Path, model: "Model | None" = None) -> "SparseAutoencoder":
        """Load a folder written by `save` (checked against ``model`` and put on its device when given)."""
        from sae_lens import SAE

        path = Path(path)
        meta_file = path / _META_FILE
        if not meta_file.exists():
            raise FileNotFoundError(f"{path} holds no mechunlearn SAE ({_META_FILE} missing); train one with train_sae(..., out_dir=...)")
        record = json.loads(meta_file.read_text())
        if record.get("format") != _FORMAT:
            raise ValueError(f"{path}: SAE format {record.get('format')} is not {_FORMAT}; retrain it")
        hook = record.pop("hook")
        record.pop("format")
        sae = cls(SAE.load_from_disk(path, device=str(model.device) if model is not None else "cpu"), hook, record)
        if model is not None:
            sae.check_model(model)
        return sae

    def __repr__(self) -> str:
        cfg = self.meta.get("config", {})
        return f"SparseAutoencoder({self.hook}, {cfg.get('architecture', '?')}, d_in={self.d_in}, n_latents={self.n_latents})"


def load_sae(path: str | Path, model: "Model | None" = None) -> SparseAutoencoder:
    """`SparseAutoencoder.load`."""
    return SparseAutoencoder.load(path, model)


# --------------------------------------------------------------------------- data


def world_corpus(model: "Model") -> list[str]:
    """The training documents of the model's synthetic world (bios-tiny): the SAE sees the data
    distribution the model was trained on, forget people included (as a pretraining SAE would)."""
    from mechunlearn.world import World

    config = model.meta.get("world_config")
    if config is None:
        raise ValueError(f"{model.model_id} has no synthetic world; build a corpus with generated_corpus(...) instead")
    return World(config).training_texts()


SEED_PROMPTS: tuple[str, ...] = (
    "Once upon a time,", "The history of the city", "In the morning, I", "Scientists have discovered that",
    "The best way to learn", "My favourite book is", "The weather today is", "A good recipe for dinner is",
    "The main causes of the war were", "In mathematics, a prime number", "The human heart", "To write a computer program,",
    "The football match ended", "The president said that", "Music has always been", "The river flows",
    "When I was a child,", "The company announced", "Water is made of", "The museum is famous for",
    "Dogs are loyal animals that", "The ancient Romans", "In the year 1900,", "The planet Mars",
    "A healthy diet includes", "The teacher asked the students", "The new law will", "Money can be used to",
    "The religion of", "Electricity is", "Christmas is celebrated", "The capital city of",
    "The train arrived at", "Plants need sunlight because", "The doctor told me", "The moon orbits",
    "Languages of the world", "The recipe calls for", "My family lives in", "The mountain was covered",
)
"""Varied, topic-neutral openings for `generated_corpus` (no concept is named on purpose)."""


def generated_corpus(
    model: "Model",
    prompts: Sequence[str] = SEED_PROMPTS,
    *,
    max_new_tokens: int = 32,
    extra_texts: Sequence[str] = (),
    batch_size: int = 16,
) -> list[str]:
    """A local corpus for a real model: its own greedy continuations of ``prompts`` (prompt +
    continuation) plus ``extra_texts`` (e.g. every concept's texts and questions). Nothing is
    downloaded; the model writes its own data."""
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings")
    if not prompts and not extra_texts:
        raise ValueError("generated_corpus needs prompts or extra_texts")
    texts: list[str] = []
    for chunk in tqdm(list(chunks(list(prompts), batch_size)), desc="generate corpus", leave=False, disable=len(prompts) <= batch_size):
        outs = model.generate(list(chunk), max_new_tokens=max_new_tokens, batch_size=batch_size)
        texts += [(p + o if o[:1].isspace() else f"{p} {o}").strip() for p, o in zip(chunk, outs)]
    return texts + [t for t in extra_texts if t.strip()]


def concept_corpus_texts(concepts) -> list[str]:
    """Every text, question + answer and unrelated question + answer of a `ConceptSet`."""
    out: list[str] = []
    for c in concepts:
        out += list(c.texts)
        out += [f"{q.prompt} {q.answer}" for q in (*c.questions, *c.unrelated)]
    return list(dict.fromkeys(out))


def _token_rows(model: "Model", texts: Sequence[str], skip_bos: bool) -> list[list[int]]:
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string")
    rows = []
    for t in texts:
        ids = model.encode(t, prepend_bos=model.prepend_bos)[: model.n_ctx]
        if len(ids) > (1 if skip_bos else 0):
            rows.append(ids)
    if not rows:
        raise ValueError("no tokens to read: the texts are empty")
    return rows


def site_activations(
    model: "Model",
    hook: str,
    texts: Sequence[str],
    *,
    skip_bos: bool = True,
    batch_size: int = 64,
    progress: bool = True,
) -> Float[Tensor, "tokens d"]:
    """Activations at ``hook`` for every real token of ``texts`` (the first token — BOS where the
    model prepends one — left out if ``skip_bos``), rows text after text; texts longer than the
    context are cut."""
    from mechunlearn.models.activations import capture

    rows = _token_rows(model, texts, skip_bos)
    drop_first = skip_bos
    out = []
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    pieces: dict[int, Tensor] = {}
    n_batches = math.ceil(len(rows) / batch_size)
    for b in tqdm(range(n_batches), desc=f"activations {hook}", leave=False, disable=not progress or n_batches < 4):
        ids = order[b * batch_size : (b + 1) * batch_size]
        tokens, mask = pad([rows[i] for i in ids], model.pad_token_id, model.n_ctx)
        act = capture(model, tokens, [hook])[hook].float()
        if drop_first:
            mask[:, 0] = False
        mask = mask.to(act.device)
        for j, i in enumerate(ids):
            pieces[i] = act[j][mask[j]]
    out = [pieces[i] for i in range(len(rows))]
    return torch.cat(out)


# --------------------------------------------------------------------------- training


def _batches(acts: Tensor, batch_size: int, gen: torch.Generator) -> Iterator[Tensor]:
    """Endless full batches from shuffled epochs over the rows (with replacement if too few)."""
    n = acts.shape[0]
    if n < batch_size:
        while True:
            yield acts[torch.randint(n, (batch_size,), generator=gen)]
    while True:
        order = torch.randperm(n, generator=gen)
        for start in range(0, n - batch_size + 1, batch_size):
            yield acts[order[start : start + batch_size]]


def _training_sae(config: SAETrainConfig, d_in: int, model_id: str, device: str):
    from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    common = dict(
        d_in=d_in,
        d_sae=config.d_sae,
        dtype="float32",
        device=device,
        apply_b_dec_to_input=True,
        normalize_activations="expected_average_only_in" if config.normalize else "none",
        metadata=SAEMetadata(model_name=model_id, hook_name=config.hook),
    )
    if config.architecture == "topk":
        # rescale_acts_by_decoder_norm=False keeps decode(f) = f @ W_dec + b_dec, so the folded
        # activation-norm scaling stays exact (and the clamp delta is exactly Σ Δf_i · W_dec[i]).
        return TopKTrainingSAE(TopKTrainingSAEConfig(k=config.k, rescale_acts_by_decoder_norm=False, **common))
    return StandardTrainingSAE(StandardTrainingSAEConfig(l1_coefficient=config.l1_coefficient, l1_warm_up_steps=max(1, config.steps // 20), **common))


def train_sae_on_activations(
    acts: Float[Tensor, "tokens d"],
    config: SAETrainConfig,
    *,
    model_id: str = "?",
    progress: bool = True,
) -> tuple[SparseAutoencoder, pd.DataFrame]:
    """Train an SAE on in-memory activation rows with SAELens' `SAETrainer` (its training step,
    dead-latent tracking, coefficient warm-up, norm scaling). Returns the inference SAE and a
    per-step log (mse, aux/L1 loss, L0, dead latents)."""
    from sae_lens import SAE, SAETrainer
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    if acts.dim() != 2 or acts.shape[0] == 0:
        raise ValueError(f"activations must be a non-empty [tokens, d] tensor, got shape {tuple(acts.shape)}")
    if not torch.isfinite(acts).all():
        raise ValueError("activations contain NaN or inf; check the model and the site")
    acts = acts.float().contiguous()
    trainer_cfg = SAETrainerConfig(
        total_training_samples=config.steps * config.batch_size,
        train_batch_size_samples=config.batch_size,
        lr=config.lr,
        lr_end=config.lr / 10,
        lr_scheduler_name="cosineannealing",
        lr_warm_up_steps=min(50, config.steps // 10),
        lr_decay_steps=0,
        device=str(acts.device),
        dead_feature_window=config.dead_feature_window,
        feature_sampling_window=max(config.steps, 1),
        n_checkpoints=0,
        save_final_checkpoint=False,
        logger=LoggingConfig(log_to_wandb=False),
        n_batches_for_norm_estimate=max(1, min(100, acts.shape[0] // config.batch_size)),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        sae = _training_sae(config, acts.shape[1], model_id, str(acts.device))
    provider = _batches(acts, config.batch_size, torch.Generator().manual_seed(config.seed))
    trainer = SAETrainer(trainer_cfg, sae, provider)
    if config.normalize:
        trainer.activation_scaler.estimate_scaling_factor(d_in=acts.shape[1], data_provider=provider, n_batches_for_norm_estimate=trainer_cfg.n_batches_for_norm_estimate)
    log_rows = []
    bar = tqdm(range(config.steps), desc=f"train SAE {config.hook}", leave=False, disable=not progress)
    for step in bar:
        out = trainer.step(next(provider))
        if not torch.isfinite(out.loss):
            raise FloatingPointError(f"SAE loss became {out.loss.item()} at step {step}; lower lr (now {config.lr})")
        trainer.n_training_steps += 1
        if step % 50 == 0 or step == config.steps - 1:
            with torch.no_grad():
                row = {"step": step, "loss": float(out.loss), **{k: float(v) for k, v in out.losses.items()}}
                row["l0"] = float((out.feature_acts > 0).float().sum(-1).mean())
                row["dead"] = int(trainer.dead_neurons.sum())
            log_rows.append(row)
            bar.set_postfix(mse=f"{row['mse_loss']:.3g}", l0=f"{row['l0']:.1f}", dead=row["dead"])
    if trainer.activation_scaler.scaling_factor is not None:
        sae.fold_activation_norm_scaling_factor(trainer.activation_scaler.scaling_factor)
        trainer.activation_scaler.scaling_factor = None
    trainer.set_final_sae_metadata()
    with tempfile.TemporaryDirectory(prefix="mechunlearn-sae-") as tmp:
        sae.save_inference_model(tmp)
        inference = SAE.load_from_disk(tmp, device=str(acts.device))
    meta = {"model_id": model_id, "config": asdict(config), "n_train_tokens": int(acts.shape[0]), "dead_latents_at_end": int(trainer.dead_neurons.sum())}
    return SparseAutoencoder(inference, config.hook, meta), pd.DataFrame(log_rows)


def train_sae(
    model: "Model",
    texts: Sequence[str],
    config: SAETrainConfig = SAETrainConfig(),
    *,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> SparseAutoencoder:
    """Cache ``config.hook`` on every token of ``texts`` (a seeded subset of at most
    ``max_tokens``), train the SAE with SAELens, and save it to ``out_dir`` if given.

    The training log is in ``sae.meta["train_log"]`` (a list of dicts, one per 50 steps)."""
    model.check_site(config.hook)
    texts = list(texts)
    if not texts:
        raise ValueError("no training texts; pass e.g. world_corpus(model) or generated_corpus(model)")
    acts = site_activations(model, config.hook, texts, skip_bos=config.skip_bos, progress=progress)
    if config.max_tokens is not None and acts.shape[0] > config.max_tokens:
        keep = torch.randperm(acts.shape[0], generator=torch.Generator().manual_seed(config.seed))[: config.max_tokens]
        acts = acts[keep.sort().values]
    sae, log_frame = train_sae_on_activations(acts, config, model_id=model.model_id, progress=progress)
    sae.meta.update(
        weights_hash=model.meta.get("weights_hash"),
        n_texts=len(texts),
        train_log=log_frame.to_dict("records"),
        provenance=provenance(model.model_id, config),
    )
    if out_dir is not None:
        sae.save(out_dir)
    return sae


def load_or_train_sae(
    model: "Model",
    texts: Sequence[str] | None,
    config: SAETrainConfig,
    path: str | Path,
    *,
    progress: bool = True,
) -> SparseAutoencoder:
    """Load the SAE in ``path`` if it was trained with the same config on the same model (and
    weights), else train it on ``texts`` and save it there."""
    path = Path(path)
    if (path / _META_FILE).exists():
        sae = SparseAutoencoder.load(path)
        same = sae.meta.get("config") == json.loads(json.dumps(asdict(config), default=str)) and sae.meta.get("model_id") == model.model_id
        same = same and sae.meta.get("weights_hash") == model.meta.get("weights_hash")
        if same:
            return sae
        log.info("SAE in %s was trained with another config or model; retraining", path)
    if texts is None:
        raise ValueError(f"no SAE for this config in {path}, and no texts to train one")
    return train_sae(model, texts, config, out_dir=path, progress=progress)


def dictionary_dir(model: "Model", kind: str, config) -> Path:
    """Where a trained dictionary of ``model`` lives: ``$MECHUNLEARN_HOME/features/<model
    id>-<weights hash>/<kind>-<config hash>`` (the weights hash keeps models with one id apart)."""
    from mechunlearn.core.paths import home
    from mechunlearn.core.result import config_hash

    weights = (model.meta.get("weights_hash") or "unhashed")[:10]
    return home() / "features" / f"{model.model_id}-{weights}" / f"{kind}-{config_hash(config)}"


def default_corpus(model: "Model") -> list[str]:
    """`world_corpus` for a model with a synthetic world, else `generated_corpus` from `SEED_PROMPTS`."""
    return world_corpus(model) if model.meta.get("world_config") is not None else generated_corpus(model)


def ensure_sae(
    model: "Model",
    config: SAETrainConfig = SAETrainConfig(),
    *,
    texts: Sequence[str] | None = None,
    path: str | Path | None = None,
    attach: bool = True,
    progress: bool = True,
) -> SparseAutoencoder:
    """The SAE for ``config``: loaded from ``path`` (default `dictionary_dir`) or trained there on
    ``texts`` (default `default_corpus`), and attached to the model (``sae:<hook>[i]`` sites)."""
    path = Path(path) if path is not None else dictionary_dir(model, "sae", config)
    if texts is None and not (path / _META_FILE).exists():
        texts = default_corpus(model)
    sae = load_or_train_sae(model, texts, config, path, progress=progress)
    if attach:
        model.attach("sae", sae.hook, sae)
    return sae


# --------------------------------------------------------------------------- splicing


def _first_position_mask(act: Tensor, skip_first: bool) -> Tensor:
    """``[batch, pos, 1]`` float mask: 0 at position 0 when it is skipped (BOS), else 1."""
    mask = torch.ones(act.shape[:-1] + (1,), dtype=act.dtype, device=act.device)
    if skip_first and act.dim() >= 3:
        mask[:, 0] = 0
    return mask


def splice_edit(sae: SparseAutoencoder, *, skip_bos: bool | None = None) -> HookEdit:
    """A `HookEdit` replacing the activation at the SAE's site by its reconstruction (BOS kept)."""
    skip = sae.skip_bos if skip_bos is None else skip_bos

    def fn(act: Tensor, hook) -> Tensor:
        recon = sae(act).to(act.dtype)
        if skip and act.dim() >= 3:
            recon = recon.clone()
            recon[:, 0] = act[:, 0]
        return recon

    return HookEdit(sae.hook, fn, label="sae_splice")


def _ablate_edit(hook: str, skip_bos: bool) -> HookEdit:
    def fn(act: Tensor, _hook) -> Tensor:
        return act * (1 - _first_position_mask(act, skip_bos))

    return HookEdit(hook, fn, label="zero_ablate")


@torch.no_grad()
def lm_loss(model: "Model", texts: Sequence[str], *, edit: Edit | None = None, batch_size: int = 64) -> float:
    """Mean next-token NLL (nats/token) of ``texts`` (cut to the context), with ``edit`` applied."""
    rows = _token_rows(model, texts, skip_bos=False)
    total, count = 0.0, 0

    def run() -> None:
        nonlocal total, count
        for chunk in chunks(sorted(rows, key=len), batch_size):
            tokens, mask = pad(chunk, model.pad_token_id, model.n_ctx)
            n = int((mask[:, 1:] & mask[:, :-1]).sum())
            total += float(lm_nll(model, TokenBatch(tokens, mask))) * n
            count += n

    if edit is None:
        run()
    else:
        with edit.applied(model):
            run()
    if count == 0:
        raise ValueError("the texts have no next-token targets (every text is one token long)")
    return total / count


@torch.no_grad()
def sae_quality(
    model: "Model",
    sae: SparseAutoencoder,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    progress: bool = True,
) -> Result:
    """SAE quality on ``texts``: explained variance ``1 − Σ‖x − x̂‖² / Σ‖x − x̄‖²``, L0 (mean active
    latents per token), dead fraction (latents that never fire on these tokens), the LM loss
    clean / with the SAE spliced in / with the site zero-ablated, the loss increase, and the share
    of the ablation's loss increase that the SAE recovers. BOS tokens are left out throughout."""
    sae.check_model(model)
    acts = site_activations(model, sae.hook, texts, skip_bos=sae.skip_bos, batch_size=batch_size, progress=progress)
    sq_err, fired, l0_sum = 0.0, torch.zeros(sae.n_latents, dtype=torch.bool, device=acts.device), 0.0
    for start in range(0, acts.shape[0], 4096):
        x = acts[start : start + 4096]
        f = sae.encode(x)
        sq_err += float((sae.decode(f) - x).double().pow(2).sum())
        active = f > 0
        fired |= active.any(0)
        l0_sum += float(active.sum())
    total_var = float((acts.double() - acts.double().mean(0)).pow(2).sum())
    clean = lm_loss(model, texts, batch_size=batch_size)
    spliced = lm_loss(model, texts, edit=splice_edit(sae), batch_size=batch_size)
    ablated = lm_loss(model, texts, edit=_ablate_edit(sae.hook, sae.skip_bos), batch_size=batch_size)
    values = {
        "explained_variance": 1 - sq_err / max(total_var, 1e-12),
        "l0": l0_sum / acts.shape[0],
        "dead_fraction": float((~fired).float().mean()),
        "lm_loss": clean,
        "lm_loss_spliced": spliced,
        "lm_loss_increase": spliced - clean,
        "lm_loss_zero_ablated": ablated,
        "loss_recovered": (ablated - spliced) / (ablated - clean) if ablated != clean else float("nan"),
    }
    frame = pd.DataFrame(
        {"metric": list(values), "value": list(values.values()), "split": "eval", "layer": Site.parse(sae.hook).layer, "method": "sae", "site": sae.hook, "n_tokens": int(acts.shape[0])}
    )
    return Result(frame, provenance(model.model_id, sae.meta.get("config"), n_texts=len(texts)))


# --------------------------------------------------------------------------- feature statistics


@torch.no_grad()
def feature_frequencies(
    model: "Model",
    sae: SparseAutoencoder,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    progress: bool = True,
) -> pd.DataFrame:
    """Per latent: ``freq`` (share of tokens where it fires, ``f > 0``), ``mean_act`` (mean
    activation over all tokens) and ``mean_when_active`` — over every non-BOS token of ``texts``."""
    acts = site_activations(model, sae.hook, texts, skip_bos=sae.skip_bos, batch_size=batch_size, progress=progress)
    count = torch.zeros(sae.n_latents, dtype=torch.float64, device=acts.device)
    total = torch.zeros(sae.n_latents, dtype=torch.float64, device=acts.device)
    for start in range(0, acts.shape[0], 4096):
        f = sae.encode(acts[start : start + 4096])
        count += (f > 0).double().sum(0)
        total += f.double().clamp_min(0).sum(0)
    n = acts.shape[0]
    count, total = count.cpu(), total.cpu()
    return pd.DataFrame(
        {
            "latent": np.arange(sae.n_latents),
            "freq": (count / n).numpy(),
            "mean_act": (total / n).numpy(),
            "mean_when_active": (total / count.clamp_min(1)).numpy(),
            "n_tokens": n,
        }
    )


@torch.no_grad()
def latent_activations(
    model: "Model",
    sae: SparseAutoencoder,
    latents: Selection | Sequence[int],
    texts_by_split: Mapping[str, Sequence[str]],
    *,
    progress: bool = True,
) -> pd.DataFrame:
    """Long frame ``split, latent, activation`` of the chosen latents' values on the tokens where
    they fire (for `mechunlearn.figures.features.activation_histogram`), plus ``freq`` per
    (split, latent) as a column."""
    idx = list(_latents(latents, sae))
    parts = []
    for split, texts in texts_by_split.items():
        acts = site_activations(model, sae.hook, texts, skip_bos=sae.skip_bos, progress=progress)
        f = torch.cat([sae.encode(acts[s : s + 4096])[:, idx] for s in range(0, acts.shape[0], 4096)])
        for j, latent in enumerate(idx):
            col = f[:, j]
            on = col[col > 0]
            parts.append(pd.DataFrame({"split": split, "latent": latent, "activation": on.cpu().numpy(), "freq": float((col > 0).float().mean())}))
    return pd.concat(parts, ignore_index=True)


def _texts_of(items: Sequence["Item"], texts: Sequence[str], data: str) -> list[str]:
    prompts = [i.prompt for i in items]
    if data == "prompts":
        return prompts
    if data == "qa":
        return [f"{i.prompt} {i.answer}" for i in items]
    if data == "texts":
        return list(texts)
    return prompts + list(texts)


@LOCALIZERS.register("sae_features")
@dataclass(frozen=True)
class SAEFeatureFrequency:
    """Score every latent of the SAE attached at ``hook`` by how much more often it fires on the
    forget data than on the retain data (Farrell et al.: frequent on forget, rare on retain).

    ``score = freq_forget − retain_weight · freq_retain`` (``difference``) or
    ``freq_forget / (freq_retain + eps)`` (``ratio``). Scores only: filter with
    ``sel.where(lambda r: r.freq_retain < 0.01)`` and cut with ``top(k)``.
    """

    hook: str = "blocks.2.hook_resid_post"
    """Hook of the SAE (attach it first: ``model.attach("sae", hook, sae)``)."""
    data: Literal["prompts", "qa", "texts", "prompts+texts"] = "prompts"
    """What the frequencies are counted on: the items' prompts, prompt + answer, the target's
    free texts, or prompts and texts."""
    score: Literal["difference", "ratio"] = "difference"
    """How forget and retain frequencies combine."""
    retain_weight: float = 1.0
    """Weight of the retain frequency in ``difference``."""
    eps: float = 1e-3
    """Floor of the retain frequency in ``ratio``."""
    per_subject: bool = False
    """Rank the latents within each forget subject (person, concept) and interleave the rankings:
    every subject's best latent first, then every subject's second, and so on (score
    ``1 / (1 + rank)``, ties in order of the subject-level score). A ranking over the whole forget
    set spends its budget on the subjects with the most distinctive latents and leaves others
    untouched; on bios-tiny (20 forget people, 4,096-latent SAE at ``blocks.2.hook_resid_post``)
    20 balanced latents at c = 12 reached forget 0.18 at retain 0.91, 32 of the global ranking at
    c = 10 forget 0.20 at retain 0.87. Needs ``prompts`` or ``qa`` data (free texts carry no
    subject)."""
    max_items: int | None = 2000
    """Seeded subset of each split's items (``None``: all)."""
    seed: int = 0
    """Seed of the subsets."""

    name: ClassVar[str] = "sae_features"

    def __post_init__(self) -> None:
        if self.data not in ("prompts", "qa", "texts", "prompts+texts"):
            raise ValueError(f"data must be prompts, qa, texts or prompts+texts, got {self.data!r}")
        if self.per_subject and self.data not in ("prompts", "qa"):
            raise ValueError(f"per_subject ranks latents on each subject's items; use data='prompts' or 'qa', not {self.data!r}")
        if self.score not in ("difference", "ratio"):
            raise ValueError(f"score must be 'difference' or 'ratio', got {self.score!r}")
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")

    def locate(self, model: "Model", target: "Target", *, sae: SparseAutoencoder | None = None, progress: bool = True) -> Selection:
        """`Selection` of every ``sae:<hook>[i]`` site, best first, with the frequencies as extras."""
        from mechunlearn.locate.saliency import seeded_subset

        if sae is None:
            sae = model.dictionary("sae", self.hook)
        elif sae.hook != self.hook:
            raise ValueError(f"the SAE is attached at {sae.hook}, the localizer is set to {self.hook}")
        items = seeded_subset(target.forget, self.max_items, self.seed)
        forget = _texts_of(items, target.forget_texts, self.data)
        retain = _texts_of(seeded_subset(target.retain, self.max_items, self.seed + 1) if target.retain else [], target.retain_texts, self.data)
        if not forget:
            raise ValueError(f"target {target.name!r} has no forget {self.data} to count latents on")
        if not retain:
            raise ValueError(f"target {target.name!r} has no retain {self.data} to count latents on; use data='prompts'")
        subjects = list(dict.fromkeys(i.subject for i in items))
        if self.per_subject and (len(subjects) < 2 or "" in subjects):
            raise ValueError(f"per_subject needs forget items of at least two named subjects, got {subjects[:5]}")
        fr = feature_frequencies(model, sae, retain, progress=progress)
        if self.per_subject:  # each subject's tokens once; the whole forget set's counts are their sum
            per_frames = {
                s: feature_frequencies(model, sae, _texts_of([i for i in items if i.subject == s], (), self.data), progress=False)
                for s in tqdm(subjects, desc="latents per subject", leave=False, disable=not progress)
            }
            ff = pooled_frequencies(list(per_frames.values()))
        else:
            ff = feature_frequencies(model, sae, forget, progress=progress)
        meta = {"localizer": self.name, "config": asdict(self)}
        overall = frequency_selection(sae, ff, fr, score=self.score, retain_weight=self.retain_weight, eps=self.eps, meta=meta)
        if not self.per_subject:
            return overall
        per = {s: frequency_selection(sae, f, fr, score=self.score, retain_weight=self.retain_weight, eps=self.eps) for s, f in per_frames.items()}
        return interleave_subjects(overall, per, meta={**meta, "subjects": subjects})


def pooled_frequencies(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The `feature_frequencies` of the union of several text sets, from their frames (token-weighted)."""
    n = np.array([int(f["n_tokens"].iloc[0]) for f in frames], dtype=np.float64)
    count = sum(f["freq"].to_numpy(np.float64) * k for f, k in zip(frames, n))
    total = sum(f["mean_act"].to_numpy(np.float64) * k for f, k in zip(frames, n))
    return pd.DataFrame(
        {
            "latent": frames[0]["latent"].to_numpy(),
            "freq": count / n.sum(),
            "mean_act": total / n.sum(),
            "mean_when_active": total / np.maximum(np.rint(count), 1),
            "n_tokens": int(n.sum()),
        }
    )

def interleave_subjects(overall: Selection, per_subject: Mapping[str, Selection], meta: Mapping | None = None) -> Selection:
    """Re-rank ``overall``'s sites round-robin over the subjects' own rankings: a site's rank is its
    best rank in any subject's ranking, its score ``1 / (1 + rank)``; within a rank, subjects come in
    order of their own top score. Extras: ``subject`` (where it ranks best) and ``subject_rank``."""
    ranks: dict[Site, tuple[int, int, str]] = {}
    order = sorted(per_subject, key=lambda s: -float(per_subject[s].scores[0]))
    for k, subject in enumerate(order):
        for r, site in enumerate(per_subject[subject].sites):
            if site not in ranks or (r, k) < ranks[site][:2]:
                ranks[site] = (r, k, subject)
    missing = [s for s in overall.sites if s not in ranks]
    if missing:
        raise ValueError(f"{len(missing)} sites (e.g. {missing[0]}) are ranked overall but not per subject")
    rows = sorted(overall.rows(), key=lambda row: ranks[row.site][:2])
    sites = [row.site for row in rows]
    extras = {k: [row.extras[k] for row in rows] for k in (rows[0].extras if rows else {})}
    extras["subject"] = [ranks[s][2] for s in sites]
    extras["subject_rank"] = [ranks[s][0] for s in sites]
    return Selection(sites, [1.0 / (1 + ranks[s][0]) for s in sites], extras, meta if meta is not None else overall.meta)


def frequency_selection(
    sae: SparseAutoencoder,
    forget: pd.DataFrame,
    retain: pd.DataFrame,
    *,
    score: str = "difference",
    retain_weight: float = 1.0,
    eps: float = 1e-3,
    meta: Mapping | None = None,
) -> Selection:
    """A `Selection` of ``sae:<hook>[i]`` sites from two `feature_frequencies` frames."""
    f, r = forget["freq"].to_numpy(), retain["freq"].to_numpy()
    scores = f - retain_weight * r if score == "difference" else f / (r + eps)
    sites = [Site("sae", sae.hook, (i,)) for i in range(sae.n_latents)]
    return Selection(
        sites,
        scores,
        {
            "latent": list(range(sae.n_latents)),
            "freq_forget": f.tolist(),
            "freq_retain": r.tolist(),
            "mean_forget": forget["mean_act"].tolist(),
            "mean_retain": retain["mean_act"].tolist(),
        },
        meta or {},
    )


# --------------------------------------------------------------------------- neurons through decoder overlap


def decoder_overlap(
    W_out: Float[Tensor, "units d"], W_dec: Float[Tensor, "latents d"], weights: Float[Tensor, "latents"]
) -> np.ndarray:
    """Each unit's overlap with a set of weighted SAE decoder directions:
    ``score_u = max_j weights_j · |cos(W_out[u], W_dec[j])|`` (float64 numpy, one per row of ``W_out``).

    ``W_out`` rows are what the units write into the residual stream (an MLP neuron's output
    direction, TL's ``blocks.L.mlp.W_out[n]``); ``W_dec`` rows the latents' decoder directions in
    the same space; ``weights`` (``>= 0``) how much each latent counts. A row of zeros writes
    nothing and scores 0. The absolute cosine: a neuron whose activation is negative where the
    latent fires writes ``-W_out[u]`` along the latent just as well.

    This is issue 14's reading of SAE latents as a neuron localizer ("scored through their
    decoder directions' overlap with planted neurons"): the latents are what Farrell, Lau & Conmy
    2024 ("Applying sparse autoencoders to unlearn knowledge in language models") select and
    clamp, and a neuron counts as theirs as far as it writes along one of them. It reads weights
    only (no activations): a neuron that never fires on forget prompts but happens to point
    along a forget latent scores as high as one that does."""
    W_out, W_dec, weights = (torch.as_tensor(t).double() for t in (W_out, W_dec, weights))
    if W_out.dim() != 2 or W_dec.dim() != 2 or weights.dim() != 1:
        raise ValueError(f"need W_out [units, d], W_dec [latents, d] and weights [latents], got {tuple(W_out.shape)}, {tuple(W_dec.shape)}, {tuple(weights.shape)}")
    if W_out.shape[1] != W_dec.shape[1]:
        raise ValueError(f"W_out rows have width {W_out.shape[1]}, the decoder directions {W_dec.shape[1]}: they must live in the same space")
    if W_dec.shape[0] != weights.shape[0] or W_dec.shape[0] == 0:
        raise ValueError(f"need one weight per latent and at least one latent, got {W_dec.shape[0]} latents and {weights.shape[0]} weights")
    for name, t in (("W_out", W_out), ("W_dec", W_dec), ("weights", weights)):
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} contains NaN or inf")
    if (weights < 0).any():
        raise ValueError("latent weights must be >= 0")
    unit = lambda m: m / m.norm(dim=1, keepdim=True).clamp_min(1e-30)  # noqa: E731 (zero rows stay zero)
    cos = (unit(W_out) @ unit(W_dec).T).abs()  # [units, latents]
    return (cos * weights).amax(dim=1).numpy()


def neuron_overlap(model: "Model", sae: SparseAutoencoder, latents: Selection) -> np.ndarray:
    """`decoder_overlap` of every MLP neuron ``(L, n)`` of ``model`` (its output direction
    ``blocks.L.mlp.W_out[n]``) with the decoder directions of ``latents`` (``sae:`` sites of
    ``sae``), each weighted by its selection score over the best one (negative scores count 0):
    a flat ``[n_layers · d_mlp]`` array, layer after layer (the ``neurons`` granularity of
    `mechunlearn.verify.localization`)."""
    idx = list(_latents(latents, sae))
    if sae.d_in != model.d_model:
        raise ValueError(f"the SAE reads width {sae.d_in}, the residual stream of {model.model_id} is {model.d_model}; MLP outputs are compared in the residual stream")
    s = torch.tensor(np.array(latents.scores, dtype=np.float64)).clamp_min(0)
    weights = s / s.max() if s.max() > 0 else torch.ones_like(s)
    W_dec = sae.W_dec.detach()[idx].cpu()
    rows = [decoder_overlap(model.weight(f"blocks.{L}.mlp.W_out").detach().cpu(), W_dec, weights) for L in range(model.n_layers)]
    return np.concatenate(rows)


# --------------------------------------------------------------------------- the edit


def _latents(features: Selection | Sequence[int] | Tensor, sae: SparseAutoencoder) -> tuple[int, ...]:
    if isinstance(features, Selection):
        idx = []
        for s in features.sites:
            if s.kind != "sae":
                raise ValueError(f"{s} is not an SAE latent site; select sae:{sae.hook}[i] sites")
            if s.name != sae.hook:
                raise ValueError(f"{s} belongs to an SAE at {s.name}, this SAE is at {sae.hook}")
            idx.append(s.index[0])
    else:
        idx = [int(i) for i in (features.tolist() if isinstance(features, Tensor) else features)]
    if not idx:
        raise ValueError("no latents to clamp; select at least one feature")
    bad = [i for i in idx if not 0 <= i < sae.n_latents]
    if bad:
        raise IndexError(f"latents {bad[:5]} out of range: the SAE has {sae.n_latents} latents")
    if len(set(idx)) != len(idx):
        raise ValueError("the same latent is listed twice")
    return tuple(idx)


def clamp_delta(
    sae: SparseAutoencoder, x: Float[Tensor, "... d"], latents: Sequence[int], value: float, mode: str = "clamp"
) -> tuple[Float[Tensor, "... d"], Float[Tensor, "... k"], Float[Tensor, "... k"]]:
    """``(Δ, f, f')`` for activations ``x``: ``f`` the selected latents' activations, ``f'`` the
    clamped ones (``-value`` where ``f > 0``; ``0`` there for ``mode="zero"``), and
    ``Δ = (f' − f) @ W_dec[latents]``."""
    idx = torch.as_tensor(list(latents), dtype=torch.long, device=x.device)
    f = sae.encode(x)[..., idx]
    new = torch.full_like(f, -float(value) if mode == "clamp" else 0.0)
    f_new = torch.where(f > 0, new, f)
    delta = (f_new - f) @ sae.W_dec[idx].to(f.dtype)
    return delta, f, f_new


@dataclass(frozen=True)
class FeatureClamp(Edit):
    """Conditional negative clamping of SAE latents, in delta form (Farrell, Lau & Conmy 2024).

    At every token (BOS excluded when the SAE was trained without it) where a selected latent
    fires (``f_i > 0``), it is set to ``-value``; the activation becomes
    ``x + Σ_i (f'_i − f_i) · W_dec[i]``, keeping the SAE's reconstruction error.
    ``mode="zero"`` sets the active latents to 0 instead (zero-ablation, the comparator).
    A `HookEdit` underneath: reverting removes exactly its hook.
    """

    sae: SparseAutoencoder = field(compare=False)
    """The SAE; its ``hook`` is where the edit acts."""
    features: Selection | Sequence[int] = field(compare=False)
    """The latents: a `Selection` of ``sae:`` sites, or latent indices."""
    value: float = 20.0
    """The clamp value ``c`` (latents set to ``-c``); ignored for ``mode="zero"``."""
    mode: Literal["clamp", "zero"] = "clamp"
    """``clamp`` (negative clamping) or ``zero`` (zero-ablation of the active latents)."""
    label: str = "sae_clamp"
    """Name shown in reprs and tables."""

    def __post_init__(self) -> None:
        if self.mode not in ("clamp", "zero"):
            raise ValueError(f"mode must be 'clamp' or 'zero', got {self.mode!r}")
        if self.mode == "clamp" and not self.value >= 0:
            raise ValueError(f"the clamp value c must be >= 0 (latents are set to -c), got {self.value}")
        object.__setattr__(self, "features", _latents(self.features, self.sae))

    @property
    def latents(self) -> tuple[int, ...]:
        return self.features  # type: ignore[return-value]

    def hook_fn(self, act: Tensor, hook=None) -> Tensor:
        """The activation with the clamp delta added (BOS untouched)."""
        delta, _, _ = clamp_delta(self.sae, act, self.latents, self.value, self.mode)
        return act + (delta * _first_position_mask(act, self.sae.skip_bos)).to(act.dtype)

    def apply(self, model: "Model") -> EditHandle:
        self.sae.check_model(model)
        handle = HookEdit(self.sae.hook, self.hook_fn, label=self.label).apply(model)
        handle.edit = self
        return handle

    def __repr__(self) -> str:
        what = f"c={self.value:g}" if self.mode == "clamp" else "zero"
        return f"FeatureClamp({self.sae.hook}, {len(self.latents)} latents, {what})"


def sae_clamp(
    model: "Model",
    target: "Target",
    *,
    config: SAETrainConfig = SAETrainConfig(),
    locator: SAEFeatureFrequency | None = None,
    n_features: int = 32,
    value: float = 10.0,
    mode: Literal["clamp", "zero"] = "clamp",
    texts: Sequence[str] | None = None,
    progress: bool = True,
) -> tuple[FeatureClamp, Selection]:
    """The whole method in one call (for studies): the SAE for ``config`` (cached, see
    `ensure_sae`), latents scored by ``locator`` (default: frequency ratio at the SAE's hook), and
    the clamp of the top ``n_features``. Returns ``(edit, full selection)``."""
    if n_features < 1:
        raise ValueError(f"n_features must be >= 1, got {n_features}")
    sae = ensure_sae(model, config, texts=texts, progress=progress)
    locator = locator or SAEFeatureFrequency(hook=config.hook, score="ratio")
    if locator.hook != config.hook:
        raise ValueError(f"the locator reads {locator.hook}, the SAE sits at {config.hook}")
    selection = locator.locate(model, target, sae=sae, progress=progress)
    return FeatureClamp(sae, selection.top(n_features), value=value, mode=mode, label=f"sae_{mode}"), selection


# --------------------------------------------------------------------------- sweep


def clamp_sweep(
    model: "Model",
    sae: SparseAutoencoder,
    features: Selection | Sequence[int],
    eval_sets: Mapping[str, Sequence["Item"]],
    *,
    values: Sequence[float] = (5.0, 10.0, 20.0, 50.0),
    n_features: Sequence[int] = (1, 2, 4, 8, 16),
    modes: Sequence[str] = ("clamp", "zero"),
    batch_size: int = 128,
    progress: bool = True,
) -> pd.DataFrame:
    """Exact match and normalised answer probability on each evaluation set, for the unedited model
    and for every (mode, c, number of top features) — zero-ablation is swept over the numbers of
    features only. Tidy: ``mode, value, n_features, split, metric, value_metric`` → one row each.

    ``features`` is ranked best first (a `Selection`, or indices in rank order)."""
    from mechunlearn.verify.behavior import score_items

    ranked = _latents(features, sae)
    if not eval_sets:
        raise ValueError("no evaluation sets; pass e.g. {'forget': target.forget, 'retain': retain_items}")
    counts = sorted({int(n) for n in n_features})
    if not counts or counts[0] < 1:
        raise ValueError(f"n_features must be positive counts, got {list(n_features)}")
    if counts[-1] > len(ranked):
        raise ValueError(f"asked for up to {counts[-1]} features but only {len(ranked)} are ranked")
    configs: list[tuple[str, float, int]] = [("none", 0.0, 0)]
    for mode in modes:
        if mode not in ("clamp", "zero"):
            raise ValueError(f"unknown mode {mode!r}; use clamp or zero")
        for n in counts:
            for c in values if mode == "clamp" else [0.0]:
                configs.append((mode, float(c), n))
    rows = []
    for mode, c, n in tqdm(configs, desc="clamp sweep", leave=False, disable=not progress):
        edit = None if mode == "none" else FeatureClamp(sae, ranked[:n], value=c, mode=mode)  # type: ignore[arg-type]
        handle = edit.apply(model) if edit is not None else None
        try:
            for split, items in eval_sets.items():
                scored = score_items(model, list(items), batch_size=batch_size, progress=False)
                for metric in ("exact_match", "answer_prob_norm"):
                    rows.append({"mode": mode, "clamp_value": c, "n_features": n, "split": split, "metric": metric, "value": float(scored[metric].mean()), "n_items": len(items)})
        finally:
            if handle is not None:
                handle.revert()
    return pd.DataFrame(rows)


__all__ = [
    "FeatureClamp",
    "SAEFeatureFrequency",
    "SAETrainConfig",
    "SEED_PROMPTS",
    "SparseAutoencoder",
    "clamp_delta",
    "clamp_sweep",
    "concept_corpus_texts",
    "decoder_overlap",
    "default_corpus",
    "dictionary_dir",
    "ensure_sae",
    "feature_frequencies",
    "frequency_selection",
    "generated_corpus",
    "interleave_subjects",
    "latent_activations",
    "load_or_train_sae",
    "load_sae",
    "lm_loss",
    "neuron_overlap",
    "pooled_frequencies",
    "sae_clamp",
    "sae_quality",
    "site_activations",
    "splice_edit",
    "train_sae",
    "train_sae_on_activations",
    "world_corpus",
]
