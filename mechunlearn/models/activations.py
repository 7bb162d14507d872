"""Activation caching: only the hook sites asked for, stopped after the last one, batched,
at chosen token positions, in memory or streamed to disk.

The forward pass is cut short by raising from the hook of the last requested site to fire
(every requested hook records its activation, and once all of them have fired a private
exception unwinds the bridge's forward). Blocks after the last needed site never run, so
caching ``blocks.0.hook_resid_post`` of a 30-layer model costs about one block. Our hooks are
`HookEdit`s: each owns exactly its hook and removes it on exit, also when the pass is cut short
or fails, so user hooks (and edits) stay in place and act on what is recorded.

| function / class       | what it gives                                                             |
| ---------------------- | ------------------------------------------------------------------------- |
| `capture`              | one forward on a token batch → ``{site: [batch, pos, ...]}`` (early stop)  |
| `cache_activations`    | many prompts → `ActivationCache` (rows = selected token positions)         |
| `activation_stats`     | many prompts → ``{site: RunningStats}`` (mean / covariance, nothing kept)  |
| `ActivationCache`      | ``cache[site]`` ``[rows, *shape]``, ``prompt_index`` / ``position`` per row, ``save`` / ``load`` |
| `RunningStats`         | streaming mean and covariance: ``add(batch)``, ``merge``, ``state_dict``    |
| `substring_last_token` | index of the last token of a substring (e.g. the subject's name) per prompt |
| `using`                | a `Model` or ``(Model, Edit)`` pair → the model, with the edit applied in the block |

Positions (``positions=``):

* ``"last"`` — the last real (non-pad) token of every prompt: one row per prompt;
* ``"all"`` — every real token: rows are the prompts' tokens, prompt after prompt;
* a sequence of ints, one per prompt — that token of each prompt (negative counts from the
  prompt's end, ``-1`` is the last token): one row per prompt;
* an ``[n_prompts, k]`` int tensor or nested list — ``k`` tokens per prompt: rows are
  ``prompt 0 slot 0, prompt 0 slot 1, …``; ``cache.by_prompt(site)`` reshapes to ``[n, k, ...]``.

Token positions count the BOS token when the model prepends one (position 0 is BOS).

>>> subj = substring_last_token(model, prompts, subjects)
>>> cache = cache_activations(model, prompts, ["blocks.1.hook_resid_post"], positions=subj)
>>> cache["blocks.1.hook_resid_post"].shape          # [n_prompts, d_model]
>>> big = cache_activations(model, prompts, sites, positions="all", out_dir="acts/")  # memmaps
>>> ActivationCache.load("acts/")["blocks.1.hook_resid_post"]
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence, Union

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from mechunlearn.core.edit import Edit, HookEdit
from mechunlearn.core.paths import home
from mechunlearn.core.result import atomic_write_text
from mechunlearn.core.site import Site
from mechunlearn.models.model import Model
from mechunlearn.models.text import pad

log = logging.getLogger(__name__)

_FORMAT = 1
DEFAULT_MAX_MEMORY_BYTES = 2 * 1024**3
"""Above this estimated size `cache_activations` streams to disk instead of memory."""


class _StopForward(Exception):
    """Raised from the hook of the last requested site to end the forward pass early."""


# --------------------------------------------------------------------------- one forward


def _site_names(model: Model, sites: Sequence[str | Site]) -> list[str]:
    if isinstance(sites, (str, Site)):
        raise TypeError("sites must be a list of hook names, e.g. ['blocks.1.hook_resid_post']")
    names: list[str] = []
    for s in sites:
        site = model.check_site(s)
        if site.kind != "hook" or site.index:
            raise ValueError(f"can only cache whole hook sites such as blocks.1.hook_resid_post, got {site}")
        if site.name not in names:
            names.append(site.name)
    if not names:
        raise ValueError("no sites to cache; name at least one hook site, e.g. blocks.0.hook_resid_post")
    return names


def capture(
    model: Model,
    tokens: Int[Tensor, "batch pos"],
    sites: Sequence[str | Site],
    *,
    select=None,
    stop_early: bool = True,
) -> dict[str, Tensor]:
    """Activations at ``sites`` for one token batch, stopping the pass after the last site fired.

    Returns ``{site: activation}`` with the hook's own shape (``[batch, pos, d_model]`` for the
    residual stream), detached. ``select(activation) -> tensor`` is applied inside the hook (to
    keep only some positions without holding the full tensor). Raises if a site never fired.
    """
    names = _site_names(model, sites)
    if tokens.dim() != 2:
        raise ValueError(f"tokens must be [batch, pos], got shape {tuple(tokens.shape)}")
    points: dict[int, list[str]] = {}  # aliases share one HookPoint: hook it once
    for name in names:
        points.setdefault(id(model.hook_point(name)), []).append(name)
    store: dict[str, Tensor] = {}
    pending = set(points)

    def recorder(point_id: int):
        def hook(act: Tensor, hook) -> None:
            value = act.detach()
            if select is not None:
                if tuple(value.shape[:2]) != tuple(tokens.shape):
                    raise ValueError(
                        f"{points[point_id][0]} has shape {tuple(value.shape)}, not [batch, pos, ...]; positions can only be "
                        "selected at such sites (use capture() without positions for attention patterns)"
                    )
                value = select(value)
            for name in points[point_id]:
                store[name] = value
            pending.discard(point_id)
            if stop_early and not pending:
                raise _StopForward

        return hook

    edits = [HookEdit(ns[0], recorder(pid), label="capture") for pid, ns in points.items()]
    handles = []
    try:
        for e in edits:
            handles.append(e.apply(model))
        try:
            with torch.no_grad():
                model.forward(tokens)
        except _StopForward:
            pass
    finally:
        for h in reversed(handles):
            h.revert()
    missing = [n for n in names if n not in store]
    if missing:
        raise RuntimeError(f"sites {missing} never fired during the forward pass; check the hook names")
    return {n: store[n] for n in names}


# --------------------------------------------------------------------------- positions


def substring_last_token(model: Model, prompts: Sequence[str], substrings: Sequence[str]) -> list[int]:
    """Index (BOS counted) of the last token of ``substrings[i]``'s first occurrence in ``prompts[i]``.

    Used for the subject's last token. Raises if a substring is missing, or if the tokens of
    the prompt up to the substring's end are not a prefix of the prompt's tokens (a tokenizer
    that merges across the boundary).
    """
    if len(prompts) != len(substrings):
        raise ValueError(f"got {len(prompts)} prompts but {len(substrings)} substrings")
    out = []
    for prompt, sub in zip(prompts, substrings):
        if not sub:
            raise ValueError(f"empty substring for prompt {prompt!r}")
        at = prompt.find(sub)
        if at < 0:
            raise ValueError(f"{sub!r} does not occur in the prompt {prompt!r}")
        head = model.encode(prompt[: at + len(sub)], prepend_bos=model.prepend_bos)
        full = model.encode(prompt, prepend_bos=model.prepend_bos)
        if full[: len(head)] != head:
            raise ValueError(f"the tokenizer merges {sub!r} with the following text in {prompt!r}; cannot locate its last token")
        out.append(len(head) - 1)
    return out


def _position_table(lengths: list[int], positions) -> tuple[Tensor, int]:
    """``[n_prompts, k]`` absolute token indices (``k = -1`` marks ``all``) and k."""
    n = len(lengths)
    if isinstance(positions, str):
        if positions == "last":
            return torch.tensor(lengths).sub(1)[:, None], 1
        if positions == "all":
            return torch.empty(0), -1
        raise ValueError(f"positions must be 'all', 'last', or token indices per prompt; got {positions!r}")
    table = torch.as_tensor(positions, dtype=torch.long)
    if table.dim() == 1:
        table = table[:, None]
    if table.dim() != 2 or table.shape[0] != n:
        raise ValueError(f"positions need one index (or one row of k indices) per prompt: {n} prompts, got shape {tuple(table.shape)}")
    length = torch.tensor(lengths)[:, None]
    absolute = torch.where(table < 0, table + length, table)
    bad = (absolute < 0) | (absolute >= length)
    if bad.any():
        i = int(bad.any(-1).nonzero()[0])
        raise IndexError(f"position {table[i].tolist()} out of range for prompt {i} of {lengths[i]} tokens (BOS counted)")
    return absolute, table.shape[1]


# --------------------------------------------------------------------------- the cache


@dataclass
class ActivationCache:
    """Cached activations: ``cache[site]`` is ``[rows, *shape]``; row ``r`` is token
    ``position[r]`` of prompt ``prompt_index[r]``. On disk, arrays are numpy memmaps (``.npy``)."""

    sites: tuple[str, ...]
    """The cached hook sites, in request order."""
    arrays: dict[str, Tensor | np.ndarray]
    """Per site: a tensor (in memory) or a ``np.memmap`` (on disk)."""
    prompt_index: Int[Tensor, "rows"]
    """Which prompt each row comes from."""
    position: Int[Tensor, "rows"]
    """Token index of each row within its prompt (BOS counted)."""
    n_prompts: int
    """Number of prompts cached."""
    per_prompt: int
    """Rows per prompt (``k``), or -1 for ``positions="all"``."""
    path: Path | None = None
    """The folder holding the memmaps, or None in memory."""
    meta: dict = field(default_factory=dict)
    """Model id and what was requested."""

    def __getitem__(self, site: str) -> Float[Tensor, "rows ..."]:
        if site not in self.arrays:
            raise KeyError(f"{site!r} was not cached; cached sites: {list(self.sites)}")
        arr = self.arrays[site]
        if isinstance(arr, np.ndarray):
            with warnings.catch_warnings():  # read-only memmaps: torch warns, we never write
                warnings.simplefilter("ignore", UserWarning)
                return torch.from_numpy(arr)
        return arr

    def __contains__(self, site: str) -> bool:
        return site in self.arrays

    def __len__(self) -> int:
        return int(self.prompt_index.numel())

    @property
    def on_disk(self) -> bool:
        """Whether the arrays are memmaps in ``path``."""
        return self.path is not None

    def by_prompt(self, site: str) -> Float[Tensor, "prompt k ..."]:
        """``[n_prompts, k, *shape]`` view for fixed positions per prompt (not for ``all``)."""
        if self.per_prompt < 1:
            raise ValueError("by_prompt needs fixed positions per prompt; this cache holds all tokens (use prompt_index)")
        acts = self[site]
        return acts.reshape(self.n_prompts, self.per_prompt, *acts.shape[1:])

    def stack(self, sites: Sequence[str] | None = None) -> Float[Tensor, "site rows d"]:
        """Activations of several same-shaped sites stacked on a new first axis (in memory)."""
        sites = list(sites or self.sites)
        return torch.stack([self[s].float() for s in sites])

    def stats(self, site: str, *, chunk: int = 8192, cov: bool = True) -> "RunningStats":
        """Mean / covariance of one site's rows, read chunk by chunk (works on memmaps)."""
        acts = self[site]
        stats = RunningStats(int(np.prod(acts.shape[1:])), cov=cov)
        for start in range(0, acts.shape[0], chunk):
            stats.add(acts[start : start + chunk].reshape(-1, stats.dim))
        return stats

    @classmethod
    def load(cls, path: str | Path, *, mode: str = "r") -> "ActivationCache":
        """Open a cache written to disk (memmaps, nothing read until used)."""
        path = Path(path)
        meta_file = path / "cache.json"
        if not meta_file.exists():
            raise FileNotFoundError(f"{path} holds no activation cache (no cache.json); write one with cache_activations(out_dir=...)")
        meta = json.loads(meta_file.read_text())
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{path}: cache format {meta.get('format')} is not {_FORMAT}; recompute it")
        arrays = {s: np.load(path / f"{i}.npy", mmap_mode=mode) for i, s in enumerate(meta["sites"])}
        index = np.load(path / "index.npy")
        return cls(
            tuple(meta["sites"]), arrays, torch.from_numpy(index[0].copy()), torch.from_numpy(index[1].copy()),
            meta["n_prompts"], meta["per_prompt"], path, meta,
        )

    def __repr__(self) -> str:
        where = f"on disk at {self.path}" if self.path else "in memory"
        shapes = {s: tuple(self.arrays[s].shape) for s in self.sites}
        return f"ActivationCache({len(self)} rows from {self.n_prompts} prompts, {shapes}, {where})"


def _iter_batches(
    model: Model, rows: list[list[int]], table: Tensor, k: int, names: list[str], batch_size: int, progress: bool
) -> Iterator[tuple[Tensor, dict[str, Tensor]]]:
    """(prompt ids of the batch, {site: selected activations}) over length-sorted batches."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    n_batches = math.ceil(len(rows) / batch_size)
    bar = tqdm(range(n_batches), desc="cache", leave=False, disable=not progress or n_batches < 4)
    for b in bar:
        ids = order[b * batch_size : (b + 1) * batch_size]
        tokens, mask = pad([rows[i] for i in ids], model.pad_token_id, model.n_ctx)
        if k == -1:
            keep = mask.to(model.device)
            select = lambda act, keep=keep: act[keep]  # noqa: E731 (row-major: prompt after prompt)
        else:
            pos = table[ids].to(model.device)
            batch_idx = torch.arange(len(ids), device=model.device)[:, None].expand_as(pos)
            select = lambda act, b_=batch_idx, p_=pos: act[b_, p_].flatten(0, 1)  # noqa: E731
        acts = capture(model, tokens, names, select=select)
        yield torch.tensor(ids), acts


def _prepare(model: Model, prompts: Sequence[str], sites, positions, batch_size: int):
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not one string")
    if not prompts:
        raise ValueError("no prompts to cache")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    names = _site_names(model, sites)
    rows = [model.encode(p, prepend_bos=model.prepend_bos) for p in prompts]
    lengths = [len(r) for r in rows]
    too_long = [i for i, n in enumerate(lengths) if n > model.n_ctx]
    if too_long:
        raise ValueError(f"prompt {too_long[0]} has {lengths[too_long[0]]} tokens, more than the context of {model.n_ctx}")
    if min(lengths) == 0:
        raise ValueError("a prompt has no tokens")
    table, k = _position_table(lengths, positions)
    return names, rows, lengths, table, k


def cache_activations(
    model: Model,
    prompts: Sequence[str],
    sites: Sequence[str | Site],
    *,
    positions="last",
    batch_size: int = 64,
    out_dir: str | Path | None = None,
    max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> ActivationCache:
    """Run ``prompts`` in batches and keep the activations at ``sites`` and ``positions``.

    Each batch stops after the last requested site. With ``out_dir`` (or when the estimated
    size exceeds ``max_memory_bytes``, then in a fresh folder under
    ``$MECHUNLEARN_HOME/activations``) rows are streamed into ``.npy`` memmaps batch by batch and
    never all held in memory. ``dtype`` is the storage type (``torch.float16`` halves disk use).
    """
    names, rows, lengths, table, k = _prepare(model, prompts, sites, positions, batch_size)
    n_rows = sum(lengths) if k == -1 else len(rows) * k
    # row offsets of each prompt in the output (original prompt order)
    starts = torch.tensor([0] + lengths[:-1]).cumsum(0) if k == -1 else torch.arange(len(rows)) * k
    if k == -1:
        prompt_index = torch.repeat_interleave(torch.arange(len(rows)), torch.tensor(lengths))
        position = torch.cat([torch.arange(n) for n in lengths])
    else:
        prompt_index = torch.arange(len(rows)).repeat_interleave(k)
        position = table.reshape(-1)
    np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
    arrays: dict[str, Tensor | np.ndarray] = {}
    folder: Path | None = Path(out_dir) if out_dir is not None else None
    meta = {"format": _FORMAT, "model_id": model.model_id, "sites": names, "n_prompts": len(rows), "per_prompt": k, "dtype": str(np_dtype)}

    for ids, acts in _iter_batches(model, rows, table, k, names, batch_size, progress):
        if not arrays:  # shapes are known after the first batch
            per_row = sum(int(np.prod(a.shape[1:])) for a in acts.values()) * np_dtype.itemsize
            estimate = per_row * n_rows
            if folder is None and estimate > max_memory_bytes:
                base = home() / "activations"
                base.mkdir(parents=True, exist_ok=True)
                folder = Path(tempfile.mkdtemp(prefix="cache-", dir=base))
                log.info("activation cache of %.2f GB exceeds %.2f GB: streaming to %s", estimate / 1e9, max_memory_bytes / 1e9, folder)
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
                for i, name in enumerate(names):
                    shape = (n_rows, *acts[name].shape[1:])
                    arrays[name] = np.lib.format.open_memmap(folder / f"{i}.npy", mode="w+", dtype=np_dtype, shape=shape)
            else:
                for name in names:
                    arrays[name] = torch.empty((n_rows, *acts[name].shape[1:]), dtype=dtype)
        if k == -1:
            dest = torch.cat([torch.arange(int(starts[i]), int(starts[i]) + lengths[i]) for i in ids.tolist()])
        else:
            dest = (starts[ids][:, None] + torch.arange(k)).reshape(-1)
        for name in names:
            value = acts[name].to("cpu", dtype)
            if folder is not None:
                arrays[name][dest.numpy()] = value.numpy()
            else:
                arrays[name][dest] = value
    if folder is not None:
        for arr in arrays.values():
            arr.flush()
        np.save(folder / "index.npy", torch.stack([prompt_index, position]).numpy())
        atomic_write_text(folder / "cache.json", json.dumps(meta, indent=2))
        arrays = {s: np.load(folder / f"{i}.npy", mmap_mode="r") for i, s in enumerate(names)}
    return ActivationCache(tuple(names), arrays, prompt_index, position, len(rows), k, folder, meta)


# --------------------------------------------------------------------------- streaming stats


class RunningStats:
    """Streaming mean and covariance of vectors (Chan et al.'s parallel update, in float64).

    >>> stats = RunningStats(d_model)
    >>> for batch in batches: stats.add(batch)          # [n, d_model]
    >>> stats.mean, stats.cov, stats.std
    """

    def __init__(self, dim: int, *, cov: bool = True) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = dim
        self.track_cov = cov
        self.count = 0
        self._mean = torch.zeros(dim, dtype=torch.float64)
        self._m2 = torch.zeros((dim, dim) if cov else (dim,), dtype=torch.float64)

    def add(self, batch: Float[Tensor, "n d"]) -> "RunningStats":
        """Fold a batch of row vectors into the statistics."""
        if batch.dim() != 2 or batch.shape[1] != self.dim:
            raise ValueError(f"expected a [n, {self.dim}] batch, got shape {tuple(batch.shape)}")
        n = batch.shape[0]
        if n == 0:
            return self
        x = batch.detach().to("cpu", torch.float64)
        mean_b = x.mean(0)
        centred = x - mean_b
        m2_b = centred.T @ centred if self.track_cov else centred.pow(2).sum(0)
        self._combine(n, mean_b, m2_b)
        return self

    def _combine(self, n: int, mean_b: Tensor, m2_b: Tensor) -> None:
        total = self.count + n
        delta = mean_b - self._mean
        corr = torch.outer(delta, delta) if self.track_cov else delta.pow(2)
        self._m2 = self._m2 + m2_b + corr * (self.count * n / total)
        self._mean = self._mean + delta * (n / total)
        self.count = total

    def merge(self, other: "RunningStats") -> "RunningStats":
        """Fold another accumulator (same dim and mode) into this one."""
        if other.dim != self.dim or other.track_cov != self.track_cov:
            raise ValueError("can only merge RunningStats of the same dim and covariance mode")
        if other.count:
            self._combine(other.count, other._mean, other._m2)
        return self

    def _need(self, at_least: int) -> None:
        if self.count < at_least:
            raise ValueError(f"need at least {at_least} rows, have {self.count}")

    @property
    def mean(self) -> Float[Tensor, "d"]:
        """Mean vector."""
        self._need(1)
        return self._mean.clone()

    @property
    def var(self) -> Float[Tensor, "d"]:
        """Unbiased per-dimension variance."""
        self._need(2)
        diag = self._m2.diagonal() if self.track_cov else self._m2
        return diag / (self.count - 1)

    @property
    def std(self) -> Float[Tensor, "d"]:
        """Per-dimension standard deviation (unbiased variance)."""
        return self.var.sqrt()

    @property
    def cov(self) -> Float[Tensor, "d d"]:
        """Unbiased covariance matrix (needs ``cov=True``)."""
        if not self.track_cov:
            raise ValueError("this RunningStats tracks variances only; create it with cov=True")
        self._need(2)
        return self._m2 / (self.count - 1)

    def state_dict(self) -> dict:
        """Everything needed to resume accumulation (tensors and counts)."""
        return {"dim": self.dim, "cov": self.track_cov, "count": self.count, "mean": self._mean.clone(), "m2": self._m2.clone()}

    @classmethod
    def from_state_dict(cls, state: Mapping) -> "RunningStats":
        """Rebuild an accumulator saved with `state_dict`."""
        stats = cls(int(state["dim"]), cov=bool(state["cov"]))
        stats.count = int(state["count"])
        stats._mean = state["mean"].clone().double()
        stats._m2 = state["m2"].clone().double()
        return stats

    def __repr__(self) -> str:
        return f"RunningStats(dim={self.dim}, count={self.count}, cov={self.track_cov})"


def activation_stats(
    model: Model,
    prompts: Sequence[str],
    sites: Sequence[str | Site],
    *,
    positions="last",
    batch_size: int = 64,
    cov: bool = True,
    progress: bool = True,
) -> dict[str, RunningStats]:
    """Mean / covariance of the activations at ``sites`` and ``positions``, streamed: no
    activation is kept beyond its batch. Multi-dimensional activations are flattened per row."""
    names, rows, _, table, k = _prepare(model, prompts, sites, positions, batch_size)
    stats: dict[str, RunningStats] = {}
    for _, acts in _iter_batches(model, rows, table, k, names, batch_size, progress):
        for name in names:
            flat = acts[name].reshape(acts[name].shape[0], -1)
            stats.setdefault(name, RunningStats(flat.shape[1], cov=cov)).add(flat)
    return stats


# --------------------------------------------------------------------------- edited models

ModelLike = Union[Model, tuple[Model, Edit]]
"""What verifiers accept as a model: a `Model`, or a `(Model, Edit)` pair read with the edit applied."""


@contextmanager
def using(subject: ModelLike) -> Iterator[Model]:
    """Yield the `Model` of ``subject``; for a ``(model, edit)`` pair, with the edit applied
    for the duration of the block (reverted on exit, also on errors)."""
    if isinstance(subject, Model):
        yield subject
        return
    if isinstance(subject, tuple) and len(subject) == 2 and isinstance(subject[0], Model) and isinstance(subject[1], Edit):
        with subject[1].applied(subject[0]):
            yield subject[0]
        return
    raise TypeError(f"expected a Model or a (Model, Edit) pair, got {type(subject).__name__}")


def model_of(subject: ModelLike) -> Model:
    """The `Model` inside a `Model` or ``(Model, Edit)`` pair."""
    if isinstance(subject, Model):
        return subject
    if isinstance(subject, tuple) and len(subject) == 2 and isinstance(subject[0], Model):
        return subject[0]
    raise TypeError(f"expected a Model or a (Model, Edit) pair, got {type(subject).__name__}")
