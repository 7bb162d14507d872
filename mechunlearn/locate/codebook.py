"""Codebook features (Tamkin et al. 2023, "Codebook features: sparse and discrete
interpretability for neural networks") and CodeUnlearn (Wu et al. 2024, "CodeUnlearn: amortized
zero-shot machine unlearning in language models using discrete concept").

A codebook bottleneck at one hook site replaces the activation ``x`` by the mean of the ``k``
codes (rows of a learnt codebook ``C``, ``K`` codes) most cosine-similar to ``x``:

    sim = normalize(x) @ normalize(C)ᵀ,   S = top-k(sim),   out = (1/k) Σ_{i∈S} C[i]

It is trained with a straight-through estimator (the output's value is the codes' mean, its
gradient with respect to ``x`` is the identity, as in VQ-VAE) and a reconstruction loss
``‖out − x‖²``, with the model frozen. ``objective="joint"`` adds the model's next-token loss with
the codebook spliced in (the codebook learns what the downstream layers need; the model's weights
still do not change).

CodeUnlearn (zero-shot, no gradient steps): count how often each code is chosen on forget data
and on control data; disable the codes much more frequent on the forget data. A disabled code's
similarity is set to −∞, so the next code takes its slot (``mode="mask"``), or its contribution is
zeroed and the mean taken over the remaining chosen codes (``mode="zero"``).

| function / class      | what it does                                                          |
| --------------------- | --------------------------------------------------------------------- |
| `CodebookConfig`      | site, number of codes K, k, optimiser, objective                      |
| `Codebook`            | the layer (``n_latents`` = K, attachable; ``save``/``load``)          |
| `train_codebook`      | train on the site's activations (reconstruction, or joint with the LM loss) |
| `codebook_quality`    | explained variance, code usage, LM loss with the codebook inserted (`Result`) |
| `code_frequencies`    | per-code firing frequency on texts                                    |
| `CodeFrequency`       | localizer: forget vs control firing → `Selection` of ``codebook:`` sites |
| `CodebookEdit`        | the edit: insert the codebook (a `HookEdit` that replaces the activation), with codes disabled |
| `random_codes`        | the comparator: the same number of codes drawn at random              |

>>> cb = train_codebook(model, world_corpus(model), CodebookConfig(hook="blocks.1.hook_resid_post"))
>>> model.attach("codebook", cb.hook, cb)
>>> sel = CodeFrequency(hook=cb.hook).locate(model, target)
>>> with CodebookEdit(cb, sel.top(20)).applied(model): behavior(model, target)
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from mechunlearn.core.edit import Edit, EditHandle, HookEdit
from mechunlearn.core.result import Result, atomic_write_dir, atomic_write_text, provenance
from mechunlearn.core.selection import Selection
from mechunlearn.core.site import Site
from mechunlearn.locate.registry import LOCALIZERS
from mechunlearn.locate.sae import _texts_of, _token_rows, lm_loss, site_activations
from mechunlearn.models.text import TokenBatch, lm_nll, pad

if TYPE_CHECKING:
    from mechunlearn.models.model import Model
    from mechunlearn.world.target import Target

log = logging.getLogger(__name__)

_FORMAT = 1
_META_FILE = "mechunlearn_codebook.json"
_WEIGHTS_FILE = "codebook.pt"


@dataclass(frozen=True)
class CodebookConfig:
    """How to train a codebook bottleneck at one site."""

    hook: str = "blocks.1.hook_resid_post"
    """The hook site whose activation the codebook replaces."""
    n_codes: int = 1024
    """Number of codes K (Tamkin et al.'s public default is 10,000 for large models)."""
    k: int = 8
    """Codes chosen per token (public default 8)."""
    objective: Literal["reconstruction", "joint"] = "reconstruction"
    """``reconstruction``: ‖out − x‖² on cached activations; ``joint``: the model's next-token loss
    with the codebook spliced in plus ``recon_weight`` × the reconstruction loss (model frozen)."""
    recon_weight: float = 1.0
    """Weight of the reconstruction loss in ``joint`` training."""
    lr: float = 1e-3
    """Adam learning rate (cosine decay to lr/10)."""
    batch_size: int = 1024
    """Tokens per step (``reconstruction``) or texts per step × 1/16 (``joint`` uses batch_size // 16 texts)."""
    steps: int = 1500
    """Optimiser steps."""
    revive_every: int = 100
    """Every this many steps, codes not chosen since the last revival are re-initialised to random
    training activations (keeps the codebook in use). 0 disables it."""
    skip_bos: bool = True
    """Leave the first token (BOS, or the attention-sink first token) out of training and pass its
    activation through unchanged."""
    max_tokens: int | None = 400_000
    """Cap on cached training tokens (a seeded subset)."""
    seed: int = 0
    """Seed of the initialisation, batches and revivals."""

    def __post_init__(self) -> None:
        for name in ("n_codes", "k", "batch_size", "steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"CodebookConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.k > self.n_codes:
            raise ValueError(f"k = {self.k} chosen codes cannot exceed n_codes = {self.n_codes}")
        if self.objective not in ("reconstruction", "joint"):
            raise ValueError(f"objective must be 'reconstruction' or 'joint', got {self.objective!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.revive_every < 0 or self.recon_weight < 0:
            raise ValueError("revive_every and recon_weight must be >= 0")
        site = Site.parse(self.hook)
        if site.kind != "hook" or site.index:
            raise ValueError(f"a codebook sits at a whole hook site such as blocks.1.hook_resid_post, got {self.hook!r}")


class Codebook(torch.nn.Module):
    """A codebook bottleneck: top-k codes by cosine similarity, output their mean.

    ``disabled`` (bool ``[K]``, default none) codes are never chosen in ``mode="mask"``.
    ``n_latents`` = K makes it attachable (``model.attach("codebook", cb.hook, cb)``).
    """

    def __init__(self, codes: Float[Tensor, "K d"], k: int, hook: str, meta: Mapping | None = None) -> None:
        super().__init__()
        if codes.dim() != 2:
            raise ValueError(f"codes must be [n_codes, d], got shape {tuple(codes.shape)}")
        if not 1 <= k <= codes.shape[0]:
            raise ValueError(f"k must be in 1..{codes.shape[0]}, got {k}")
        self.codes = torch.nn.Parameter(codes.detach().clone().float())
        self.k = int(k)
        self.hook = hook
        self.meta = dict(meta or {})

    @property
    def n_latents(self) -> int:
        return int(self.codes.shape[0])

    @property
    def d_in(self) -> int:
        return int(self.codes.shape[1])

    @property
    def skip_bos(self) -> bool:
        return bool(self.meta.get("config", {}).get("skip_bos", True))

    def similarity(self, x: Float[Tensor, "... d"]) -> Float[Tensor, "... K"]:
        """Cosine similarity of each activation to each code."""
        if x.shape[-1] != self.d_in:
            raise ValueError(f"the codebook at {self.hook} reads width {self.d_in}, got width {x.shape[-1]}")
        return F.normalize(x.float(), dim=-1) @ F.normalize(self.codes, dim=-1).T

    def select(self, x: Float[Tensor, "... d"], disabled: Tensor | None = None) -> Int[Tensor, "... k"]:
        """Indices of the ``k`` chosen codes (disabled codes excluded)."""
        sim = self.similarity(x)
        if disabled is not None and bool(disabled.any()):
            if int((~disabled).sum()) < self.k:
                raise ValueError(f"only {int((~disabled).sum())} codes left enabled, fewer than k = {self.k}")
            sim = sim.masked_fill(disabled.to(sim.device), -torch.inf)
        return sim.topk(self.k, dim=-1).indices

    def forward(
        self, x: Float[Tensor, "... d"], disabled: Tensor | None = None, mode: str = "mask"
    ) -> Float[Tensor, "... d"]:
        """Mean of the chosen codes, with a straight-through gradient to ``x``."""
        if mode == "mask":
            idx = self.select(x, disabled)
            out = self.codes[idx].mean(-2)
        elif mode == "zero":
            # the disabled codes' share of the mean is zeroed, not handed to the others:
            # (sum of the enabled chosen codes) / k, so the output shrinks where they fired
            idx = self.select(x)
            keep = torch.ones(idx.shape, dtype=self.codes.dtype, device=idx.device)
            if disabled is not None:
                keep = (~disabled.to(idx.device)[idx]).to(self.codes.dtype)
            out = (self.codes[idx] * keep[..., None]).sum(-2) / self.k
        else:
            raise ValueError(f"mode must be 'mask' or 'zero', got {mode!r}")
        out = out.to(x.dtype)
        if x.requires_grad:
            out = out + (x - x.detach())  # straight-through: value = codes' mean, d out / d x = I
        return out

    # ----- persistence
    def save(self, path: str | Path) -> Path:
        """Write ``codebook.pt`` and metadata to the folder ``path`` (atomically)."""
        def write(folder: Path) -> None:
            torch.save({"codes": self.codes.detach().cpu()}, folder / _WEIGHTS_FILE)
            record = {"format": _FORMAT, "hook": self.hook, "k": self.k, **self.meta}
            atomic_write_text(folder / _META_FILE, json.dumps(record, indent=2, default=str))

        return atomic_write_dir(path, write)

    @classmethod
    def load(cls, path: str | Path, model: "Model | None" = None) -> "Codebook":
        """Load a folder written by `save` (checked against ``model`` and put on its device when given)."""
        path = Path(path)
        if not (path / _META_FILE).exists():
            raise FileNotFoundError(f"{path} holds no codebook ({_META_FILE} missing); train one with train_codebook(..., out_dir=...)")
        record = json.loads((path / _META_FILE).read_text())
        if record.pop("format", None) != _FORMAT:
            raise ValueError(f"{path}: codebook format is not {_FORMAT}; retrain it")
        hook, k = record.pop("hook"), record.pop("k")
        state = torch.load(path / _WEIGHTS_FILE, map_location="cpu", weights_only=True)
        cb = cls(state["codes"].to(model.device if model is not None else "cpu"), k, hook, record)
        cb.codes.requires_grad_(False)
        if model is not None:
            cb.check_model(model)
        return cb

    def check_model(self, model: "Model") -> None:
        """Raise if the codebook was trained on another model."""
        mid = self.meta.get("model_id")
        if mid is not None and mid != model.model_id:
            raise ValueError(f"this codebook was trained on {mid!r}, not on {model.model_id!r}")
        model.check_site(Site("hook", self.hook))

    def __repr__(self) -> str:
        return f"Codebook({self.hook}, n_codes={self.n_latents}, k={self.k}, d={self.d_in})"


# --------------------------------------------------------------------------- training


def _recon_loss(out: Tensor, x: Tensor, scale: float) -> Tensor:
    return (out - x).pow(2).sum(-1).mean() / scale


def train_codebook(
    model: "Model",
    texts: Sequence[str],
    config: CodebookConfig = CodebookConfig(),
    *,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> Codebook:
    """Train a codebook at ``config.hook`` on the tokens of ``texts``; the model stays frozen.

    Codes start as random training activations. The loss is normalised by the mean ‖x‖² so one
    learning rate fits every site. The training log is in ``codebook.meta["train_log"]``."""
    model.check_site(config.hook)
    texts = list(texts)
    if not texts:
        raise ValueError("no training texts; pass e.g. world_corpus(model)")
    acts = site_activations(model, config.hook, texts, skip_bos=config.skip_bos, progress=progress)
    gen = torch.Generator().manual_seed(config.seed)
    if config.max_tokens is not None and acts.shape[0] > config.max_tokens:
        acts = acts[torch.randperm(acts.shape[0], generator=gen)[: config.max_tokens].sort().values]
    n = acts.shape[0]
    init = acts[torch.randint(n, (config.n_codes,), generator=gen)]
    cb = Codebook(init, config.k, config.hook, {"model_id": model.model_id, "config": asdict(config)})
    scale = float(acts.pow(2).sum(-1).mean())
    opt = torch.optim.Adam(cb.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.steps, eta_min=config.lr / 10)
    used = torch.zeros(config.n_codes, dtype=torch.bool, device=acts.device)
    rows = _token_rows(model, texts, skip_bos=False) if config.objective == "joint" else None
    text_batch = max(1, config.batch_size // 16)
    log_rows = []
    bar = tqdm(range(config.steps), desc=f"train codebook {config.hook}", leave=False, disable=not progress)
    for step in bar:
        if config.objective == "reconstruction":
            x = acts[torch.randint(n, (config.batch_size,), generator=gen)]
            out = cb(x)
            loss = recon = _recon_loss(out, x, scale)
            with torch.no_grad():
                used[cb.select(x).unique()] = True
            lm = float("nan")
        else:
            pick = torch.randint(len(rows), (text_batch,), generator=gen).tolist()
            tokens, mask = pad([rows[i] for i in pick], model.pad_token_id, model.n_ctx)
            store: dict[str, Tensor] = {}

            def hook_fn(act: Tensor, hook, store=store) -> Tensor:
                out = cb(act)
                if config.skip_bos:
                    out = torch.cat([act[:, :1], out[:, 1:]], 1)
                keep = mask.to(act.device).clone()
                if config.skip_bos:
                    keep[:, 0] = False
                store["recon"] = _recon_loss(out[keep], act[keep].detach(), scale)
                with torch.no_grad():
                    used[cb.select(act[keep]).unique()] = True
                return out

            with HookEdit(config.hook, hook_fn, label="codebook_train").applied(model):
                lm_t = lm_nll(model, TokenBatch(tokens, mask))
            recon = store["recon"]
            loss = lm_t + config.recon_weight * recon
            lm = lm_t.item()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"codebook loss became {float(loss)} at step {step}; lower lr (now {config.lr})")
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if config.revive_every and (step + 1) % config.revive_every == 0 and step + 1 < config.steps:
            dead = (~used).nonzero().flatten()
            if len(dead):
                with torch.no_grad():
                    cb.codes[dead] = acts[torch.randint(n, (len(dead),), generator=gen)]
            used.zero_()
        if step % 50 == 0 or step == config.steps - 1:
            log_rows.append({"step": step, "loss": loss.item(), "recon": recon.item(), "lm": lm})
            bar.set_postfix(recon=f"{recon.item():.3g}")
    cb.codes.requires_grad_(False)
    cb.meta.update(weights_hash=model.meta.get("weights_hash"), n_train_tokens=int(n), n_texts=len(texts), train_log=log_rows, provenance=provenance(model.model_id, config))
    if out_dir is not None:
        cb.save(out_dir)
    return cb


def load_or_train_codebook(model: "Model", texts: Sequence[str] | None, config: CodebookConfig, path: str | Path, *, progress: bool = True) -> Codebook:
    """Load the codebook in ``path`` if trained with the same config on the same model weights,
    else train it on ``texts`` and save it there."""
    path = Path(path)
    if (path / _META_FILE).exists():
        cb = Codebook.load(path)
        same = cb.meta.get("config") == json.loads(json.dumps(asdict(config), default=str)) and cb.meta.get("model_id") == model.model_id
        if same and cb.meta.get("weights_hash") == model.meta.get("weights_hash"):
            return cb
    if texts is None:
        raise ValueError(f"no codebook for this config in {path}, and no texts to train one")
    return train_codebook(model, texts, config, out_dir=path, progress=progress)


def ensure_codebook(
    model: "Model",
    config: CodebookConfig = CodebookConfig(),
    *,
    texts: Sequence[str] | None = None,
    path: str | Path | None = None,
    attach: bool = True,
    progress: bool = True,
) -> Codebook:
    """The codebook for ``config``: loaded from ``path`` (default
    `mechunlearn.locate.sae.dictionary_dir`) or trained there on ``texts`` (default
    `mechunlearn.locate.sae.default_corpus`), and attached (``codebook:<hook>[i]`` sites)."""
    from mechunlearn.locate.sae import default_corpus, dictionary_dir

    path = Path(path) if path is not None else dictionary_dir(model, "codebook", config)
    if texts is None and not (path / _META_FILE).exists():
        texts = default_corpus(model)
    cb = load_or_train_codebook(model, texts, config, path, progress=progress)
    if attach:
        model.attach("codebook", cb.hook, cb)
    return cb


# --------------------------------------------------------------------------- the edit


def _code_indices(codes: Selection | Sequence[int] | Tensor, cb: Codebook) -> tuple[int, ...]:
    if isinstance(codes, Selection):
        idx = []
        for s in codes.sites:
            if s.kind != "codebook":
                raise ValueError(f"{s} is not a codebook code site; select codebook:{cb.hook}[i] sites")
            if s.name != cb.hook:
                raise ValueError(f"{s} belongs to a codebook at {s.name}, this one is at {cb.hook}")
            idx.append(s.index[0])
    else:
        idx = [int(i) for i in (codes.tolist() if isinstance(codes, Tensor) else codes)]
    bad = [i for i in idx if not 0 <= i < cb.n_latents]
    if bad:
        raise IndexError(f"codes {bad[:5]} out of range: the codebook has {cb.n_latents} codes")
    if len(set(idx)) != len(idx):
        raise ValueError("the same code is listed twice")
    if cb.n_latents - len(idx) < cb.k:
        raise ValueError(f"disabling {len(idx)} of {cb.n_latents} codes leaves fewer than k = {cb.k}")
    return tuple(idx)


@dataclass(frozen=True)
class CodebookEdit(Edit):
    """Insert a codebook at its site (the activation is *replaced* by the codes' mean; BOS passes
    through), optionally with codes disabled — CodeUnlearn's edit (Wu et al. 2024). With no
    disabled codes this is the codebook model CodeUnlearn starts from. A `HookEdit` underneath."""

    codebook: Codebook = field(compare=False)
    """The trained codebook."""
    disabled: Selection | Sequence[int] = field(default=(), compare=False)
    """Codes to disable: a `Selection` of ``codebook:`` sites, or code indices."""
    mode: Literal["mask", "zero"] = "mask"
    """``mask``: disabled codes are never chosen (the next code takes the slot); ``zero``: their
    contribution is dropped from the mean."""
    label: str = "codeunlearn"
    """Name shown in reprs and tables."""

    def __post_init__(self) -> None:
        if self.mode not in ("mask", "zero"):
            raise ValueError(f"mode must be 'mask' or 'zero', got {self.mode!r}")
        object.__setattr__(self, "disabled", _code_indices(self.disabled, self.codebook))

    @property
    def disabled_mask(self) -> Tensor:
        mask = torch.zeros(self.codebook.n_latents, dtype=torch.bool, device=self.codebook.codes.device)
        if self.disabled:
            mask[list(self.disabled)] = True
        return mask

    def hook_fn(self, act: Tensor, hook=None) -> Tensor:
        """The codebook's output (BOS kept as it was)."""
        out = self.codebook(act, self.disabled_mask if self.disabled else None, self.mode)
        if self.codebook.skip_bos and act.dim() >= 3:
            out = out.clone()
            out[:, 0] = act[:, 0]
        return out

    def apply(self, model: "Model") -> EditHandle:
        self.codebook.check_model(model)
        handle = HookEdit(self.codebook.hook, self.hook_fn, label=self.label).apply(model)
        handle.edit = self
        return handle

    def __repr__(self) -> str:
        return f"CodebookEdit({self.codebook.hook}, {len(self.disabled)} codes disabled, {self.mode})"


def random_codes(codebook: Codebook, n: int, *, among: Sequence[int] | None = None, seed: int = 0) -> tuple[int, ...]:
    """``n`` codes drawn at random (seeded) — from ``among`` (e.g. the codes that fire at all on
    the evaluation data, so the comparator does not waste its budget on dead codes) or from all."""
    pool = list(range(codebook.n_latents)) if among is None else [int(i) for i in among]
    if n > len(pool):
        raise ValueError(f"cannot draw {n} codes from a pool of {len(pool)}")
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:n]
    return tuple(sorted(pool[i] for i in order.tolist()))


# --------------------------------------------------------------------------- statistics


@torch.no_grad()
def code_frequencies(model: "Model", codebook: Codebook, texts: Sequence[str], *, batch_size: int = 64, progress: bool = True) -> pd.DataFrame:
    """Per code: ``freq`` (share of non-BOS tokens where it is among the chosen k) and ``count``."""
    acts = site_activations(model, codebook.hook, texts, skip_bos=codebook.skip_bos, batch_size=batch_size, progress=progress)
    count = torch.zeros(codebook.n_latents, dtype=torch.float64, device=acts.device)
    for start in range(0, acts.shape[0], 4096):
        idx = codebook.select(acts[start : start + 4096])
        count += torch.bincount(idx.flatten(), minlength=codebook.n_latents).double()
    n = acts.shape[0]
    count = count.cpu()
    return pd.DataFrame({"latent": np.arange(codebook.n_latents), "count": count.numpy().astype(np.int64), "freq": (count / n).numpy(), "n_tokens": n})


@torch.no_grad()
def codebook_quality(model: "Model", codebook: Codebook, texts: Sequence[str], *, batch_size: int = 64, progress: bool = True) -> Result:
    """Explained variance of the codebook's output, code usage (share of codes chosen at least
    once; ``dead_fraction`` = 1 − usage), and the LM loss with the codebook inserted."""
    codebook.check_model(model)
    acts = site_activations(model, codebook.hook, texts, skip_bos=codebook.skip_bos, batch_size=batch_size, progress=progress)
    sq_err, used = 0.0, torch.zeros(codebook.n_latents, dtype=torch.bool, device=acts.device)
    for start in range(0, acts.shape[0], 4096):
        x = acts[start : start + 4096]
        sq_err += float((codebook(x) - x).double().pow(2).sum())
        used[codebook.select(x).unique()] = True
    total_var = float((acts.double() - acts.double().mean(0)).pow(2).sum())
    clean = lm_loss(model, texts, batch_size=batch_size)
    inserted = lm_loss(model, texts, edit=CodebookEdit(codebook), batch_size=batch_size)
    values = {
        "explained_variance": 1 - sq_err / max(total_var, 1e-12),
        "code_usage": float(used.float().mean()),
        "dead_fraction": float((~used).float().mean()),
        "lm_loss": clean,
        "lm_loss_codebook": inserted,
        "lm_loss_increase": inserted - clean,
    }
    frame = pd.DataFrame({"metric": list(values), "value": list(values.values()), "split": "eval", "layer": Site.parse(codebook.hook).layer, "method": "codebook", "site": codebook.hook, "n_tokens": int(acts.shape[0])})
    return Result(frame, provenance(model.model_id, codebook.meta.get("config"), n_texts=len(texts)))


@LOCALIZERS.register("codeunlearn_codes")
@dataclass(frozen=True)
class CodeFrequency:
    """CodeUnlearn's code scores (Wu et al. 2024): how much more often each code of the codebook at
    ``hook`` is chosen on forget data than on control (retain) data.

    ``ratio``: ``(freq_forget + eps) / (freq_retain + eps)`` — "much more frequent"; ``difference``:
    ``freq_forget − freq_retain``. Scores only: cut with ``top(n)`` or ``where``.
    """

    hook: str = "blocks.1.hook_resid_post"
    """Hook of the codebook (attach it first: ``model.attach("codebook", hook, cb)``)."""
    data: Literal["prompts", "qa", "texts", "prompts+texts"] = "prompts"
    """What the counts are taken on (see `mechunlearn.locate.sae.SAEFeatureFrequency`)."""
    score: Literal["ratio", "difference"] = "difference"
    """How forget and control frequencies combine."""
    eps: float = 1e-3
    """Smoothing of the ratio."""
    max_items: int | None = 2000
    """Seeded subset of each split's items (``None``: all)."""
    seed: int = 0
    """Seed of the subsets."""

    name: ClassVar[str] = "codeunlearn_codes"

    def __post_init__(self) -> None:
        if self.score not in ("ratio", "difference"):
            raise ValueError(f"score must be 'ratio' or 'difference', got {self.score!r}")
        if self.data not in ("prompts", "qa", "texts", "prompts+texts"):
            raise ValueError(f"data must be prompts, qa, texts or prompts+texts, got {self.data!r}")
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")

    def locate(self, model: "Model", target: "Target", *, codebook: Codebook | None = None, progress: bool = True) -> Selection:
        """`Selection` of every ``codebook:<hook>[i]`` site, best first, with frequencies as extras."""
        from mechunlearn.locate.saliency import seeded_subset

        if codebook is None:
            codebook = model.dictionary("codebook", self.hook)
        elif codebook.hook != self.hook:
            raise ValueError(f"the codebook is at {codebook.hook}, the localizer is set to {self.hook}")
        forget = _texts_of(seeded_subset(target.forget, self.max_items, self.seed), target.forget_texts, self.data)
        retain = _texts_of(seeded_subset(target.retain, self.max_items, self.seed + 1) if target.retain else [], target.retain_texts, self.data)
        if not forget or not retain:
            raise ValueError(f"target {target.name!r} needs forget and retain {self.data} to count codes on")
        ff = code_frequencies(model, codebook, forget, progress=progress)
        fr = code_frequencies(model, codebook, retain, progress=progress)
        f, r = ff["freq"].to_numpy(), fr["freq"].to_numpy()
        scores = (f + self.eps) / (r + self.eps) if self.score == "ratio" else f - r
        sites = [Site("codebook", codebook.hook, (i,)) for i in range(codebook.n_latents)]
        return Selection(
            sites, scores,
            {"latent": list(range(codebook.n_latents)), "freq_forget": f.tolist(), "freq_retain": r.tolist()},
            {"localizer": self.name, "config": asdict(self)},
        )


def codeunlearn(
    model: "Model",
    target: "Target",
    *,
    config: CodebookConfig = CodebookConfig(),
    locator: CodeFrequency | None = None,
    n_codes: int = 256,
    mode: Literal["mask", "zero"] = "zero",
    random: bool = False,
    seed: int = 0,
    texts: Sequence[str] | None = None,
    progress: bool = True,
) -> tuple[CodebookEdit, Selection]:
    """CodeUnlearn in one call (for studies): the codebook for ``config`` (cached, see
    `ensure_codebook`), codes scored by ``locator`` (default: frequency difference at its hook), and
    the edit disabling the top ``n_codes`` — or, with ``random=True``, as many random codes among
    those chosen at all on the forget/retain prompts (the comparator). Returns ``(edit, selection)``."""
    if n_codes < 1:
        raise ValueError(f"n_codes must be >= 1, got {n_codes}")
    cb = ensure_codebook(model, config, texts=texts, progress=progress)
    locator = locator or CodeFrequency(hook=config.hook)
    if locator.hook != config.hook:
        raise ValueError(f"the locator reads {locator.hook}, the codebook sits at {config.hook}")
    selection = locator.locate(model, target, codebook=cb, progress=progress)
    if random:
        frame = selection.to_frame()
        live = frame.loc[(frame["freq_forget"] + frame["freq_retain"]) > 0, "latent"].astype(int).tolist()
        codes: Selection | tuple[int, ...] = random_codes(cb, n_codes, among=live, seed=seed)
    else:
        codes = selection.top(n_codes)
    return CodebookEdit(cb, codes, mode=mode, label="random_codes" if random else "codeunlearn"), selection


__all__ = [
    "CodeFrequency",
    "Codebook",
    "CodebookConfig",
    "CodebookEdit",
    "code_frequencies",
    "codeunlearn",
    "codebook_quality",
    "ensure_codebook",
    "load_or_train_codebook",
    "random_codes",
    "train_codebook",
]
