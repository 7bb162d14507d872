"""`Model`: a thin adapter over a TransformerLens `TransformerBridge`.

It gives every weight a TransformerLens name and layout (``blocks.3.mlp.W_out`` is
``[d_mlp, d_model]``, row ``i`` is value vector ``i``) as a *writable view* of the underlying
parameter, validates `Site`s, tokenises consistently (right padding, so absolute position
embeddings stay put) and hands out nnsight access to the same module.

| weight name            | TL layout                       | underlying parameter        |
| ---------------------- | ------------------------------- | --------------------------- |
| ``embed.W_E``          | ``[d_vocab, d_model]``          | embedding weight            |
| ``pos_embed.W_pos``    | ``[n_ctx, d_model]``            | (absolute positions only)   |
| ``blocks.l.attn.W_Q``  | ``[n_heads, d_model, d_head]``  | q weight ``[h*d_head, d_model]`` |
| ``blocks.l.attn.W_O``  | ``[n_heads, d_head, d_model]``  | o weight ``[d_model, h*d_head]`` |
| ``blocks.l.mlp.W_in``  | ``[d_model, d_mlp]``            | in / up weight, transposed  |
| ``blocks.l.mlp.W_out`` | ``[d_mlp, d_model]``            | out / down weight, transposed |
| ``unembed.W_U``        | ``[d_model, d_vocab]``          | unembedding weight, transposed |
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

import torch
from torch import Tensor

from mechunlearn.core.site import DICTIONARY_KINDS, Site
from mechunlearn.models.tokens import TokenBatch, pad

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightSpec:
    """One named weight: its underlying parameter and the view that gives its TL layout."""

    name: str
    """TransformerLens-style name, e.g. ``blocks.3.mlp.W_out``."""
    param: torch.nn.Parameter
    """The parameter that owns the storage."""
    to_tl: Callable[[Tensor], Tensor]
    """Maps the parameter (or its gradient, or a same-shaped mask) to a TL-layout view."""

    @property
    def view(self) -> Tensor:
        """Writable TL-layout view of the parameter."""
        return self.to_tl(self.param)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.view.shape)


def _identity(t: Tensor) -> Tensor:
    return t


def _transpose(t: Tensor) -> Tensor:
    return t.transpose(0, 1)


def _heads_in(n_heads: int) -> Callable[[Tensor], Tensor]:
    # [h*d_head, d_model] -> [h, d_model, d_head]; bias [h*d_head] -> [h, d_head]
    def view(t: Tensor) -> Tensor:
        if t.dim() == 1:
            return t.view(n_heads, -1)
        return t.view(n_heads, -1, t.shape[-1]).transpose(1, 2)

    return view


def _heads_out(n_heads: int) -> Callable[[Tensor], Tensor]:
    # [d_model, h*d_head] -> [h, d_head, d_model]
    return lambda t: t.transpose(0, 1).view(n_heads, -1, t.shape[0])


def _in_module(module: str) -> Callable[[str], bool]:
    return lambda name: f".{module}." in name


WEIGHT_FAMILIES: dict[str, Callable[[str], bool]] = {
    "all": lambda name: True,
    "mlp": _in_module("mlp"),
    "attn": _in_module("attn"),
    "no_embed": lambda name: name.startswith("blocks.") and ".ln" not in name and "_norm." not in name,
    "matrices": lambda name: name.startswith("blocks.") and ".W_" in name,
}
"""Parameter families that localizers rank and the loop trains (see `Model.weight_names`)."""


class Model:
    """Adapter over a `TransformerBridge`: names, weights, sites, tokenisation, nnsight.

    >>> model = load_model("bios-tiny")
    >>> model.weight("blocks.1.mlp.W_out[7]").shape      # one value vector
    torch.Size([256])
    >>> logits = model.forward(model.tokenize(["where was ada born ?"]).tokens)
    """

    def __init__(
        self,
        bridge,
        tokenizer,
        model_id: str,
        *,
        prepend_bos: bool = True,
        meta: dict | None = None,
    ) -> None:
        self.bridge = bridge
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.prepend_bos = prepend_bos
        self.meta = dict(meta or {})
        self.bridge.eval()
        for p in self.bridge.parameters():
            p.requires_grad_(False)
        self._weights = self._build_weight_table()
        self._hook_names = frozenset(self.bridge.hook_dict)
        self._dictionaries: dict[tuple[str, str], torch.nn.Module] = {}
        self._active_weight_handles: list = []  # LIFO stack kept by core.edit
        self._hash_states: list = []  # weights_hash: (version, digest state after this weight) per weight

    # ------------------------------------------------------------------ shape facts
    @property
    def cfg(self):
        """The bridge's config (``n_layers``, ``d_model``, ``d_mlp`` …)."""
        return self.bridge.cfg

    @property
    def n_layers(self) -> int:
        return int(self.cfg.n_layers)

    @property
    def d_model(self) -> int:
        return int(self.cfg.d_model)

    @property
    def d_mlp(self) -> int:
        return int(self.cfg.d_mlp)

    @property
    def gated_mlp(self) -> bool:
        """Whether the MLPs are gated (``m = act(gate) · up``: SwiGLU, GeGLU), so that a neuron's
        activation takes either sign; non-gated GELU/ReLU activations are (almost) non-negative."""
        return "blocks.0.mlp.W_gate" in self.weight_names("mlp")

    @property
    def d_vocab(self) -> int:
        return int(self.bridge.W_U.shape[-1])

    @property
    def n_ctx(self) -> int:
        return int(self.cfg.n_ctx)

    @property
    def device(self) -> torch.device:
        return next(self.bridge.parameters()).device

    def __repr__(self) -> str:
        return (
            f"Model({self.model_id!r}, n_layers={self.n_layers}, d_model={self.d_model}, "
            f"d_mlp={self.d_mlp}, d_vocab={self.d_vocab})"
        )

    # ------------------------------------------------------------------ weights
    def _build_weight_table(self) -> dict[str, WeightSpec]:
        b = self.bridge
        n_heads = int(self.cfg.n_heads)
        n_kv = int(getattr(self.cfg, "n_key_value_heads", None) or n_heads)
        table: dict[str, WeightSpec] = {}

        def add(name: str, module, attr: str, to_tl=_identity) -> None:
            inner = getattr(module, "original_component", module)
            param = getattr(inner, attr, None)
            if isinstance(param, torch.nn.Parameter):
                table[name] = WeightSpec(name, param, to_tl)

        add("embed.W_E", b.embed, "weight")
        if hasattr(b, "pos_embed"):
            add("pos_embed.W_pos", b.pos_embed, "weight")
        for layer, block in enumerate(b.blocks):
            pre = f"blocks.{layer}"
            for ln in ("ln1", "ln1_post", "ln2", "ln2_post"):  # *_post: Gemma's norms after attention / MLP
                if hasattr(block, ln):
                    add(f"{pre}.{ln}.w", getattr(block, ln), "weight")
                    add(f"{pre}.{ln}.b", getattr(block, ln), "bias")
            attn = block.attn
            for norm in ("q_norm", "k_norm"):  # per-head query / key norms (Gemma 3, Qwen 3)
                if hasattr(attn, norm):
                    add(f"{pre}.attn.{norm}.w", getattr(attn, norm), "weight")
            for tl, sub, heads in (("Q", "q", n_heads), ("K", "k", n_kv), ("V", "v", n_kv)):
                add(f"{pre}.attn.W_{tl}", getattr(attn, sub), "weight", _heads_in(heads))
                add(f"{pre}.attn.b_{tl}", getattr(attn, sub), "bias", _heads_in(heads))
            add(f"{pre}.attn.W_O", attn.o, "weight", _heads_out(n_heads))
            add(f"{pre}.attn.b_O", attn.o, "bias")
            mlp = block.mlp
            add(f"{pre}.mlp.W_in", getattr(mlp, "in"), "weight", _transpose)
            add(f"{pre}.mlp.b_in", getattr(mlp, "in"), "bias")
            if hasattr(mlp, "gate"):
                add(f"{pre}.mlp.W_gate", mlp.gate, "weight", _transpose)
                add(f"{pre}.mlp.b_gate", mlp.gate, "bias")
            add(f"{pre}.mlp.W_out", mlp.out, "weight", _transpose)
            add(f"{pre}.mlp.b_out", mlp.out, "bias")
        add("ln_final.w", b.ln_final, "weight")
        add("ln_final.b", b.ln_final, "bias")
        add("unembed.W_U", b.unembed, "weight", _transpose)
        add("unembed.b_U", b.unembed, "bias")
        # every parameter has a name, so that weights_hash and weight files cover all of them;
        # one this table does not know keeps its module path (family "all" only)
        known = {spec.param.data_ptr() for spec in table.values()}
        for path, param in b.named_parameters():
            if param.data_ptr() not in known:
                known.add(param.data_ptr())
                table[f"extra.{path}"] = WeightSpec(f"extra.{path}", param, _identity)
                log.info("%s: parameter %s has no TransformerLens name; listed as extra.%s", self.model_id, path, path)
        return table

    def weight_names(self, family: str = "all", *, include_tied: bool = False) -> list[str]:
        """Names of the weights of a family, in model order.

        ``family``: ``all`` (parameters without a TransformerLens name included, as
        ``extra.<module path>``); ``mlp`` or ``attn`` (matrices, biases and norms of those modules);
        ``no_embed`` (everything but embeddings, unembedding and norms); ``matrices`` (2-D and
        head-split weights of attention and MLP only). Tied weights (SmolLM2's ``W_U`` is
        ``W_E``ᵀ) are listed once unless ``include_tied``.
        """
        if family not in WEIGHT_FAMILIES:
            raise ValueError(f"unknown weight family {family!r}; choose one of {', '.join(WEIGHT_FAMILIES)}")
        seen: set[int] = set()
        names = []
        for name, spec in self._weights.items():
            ptr = spec.param.data_ptr()
            if (ptr in seen and not include_tied) or not WEIGHT_FAMILIES[family](name):
                continue
            seen.add(ptr)
            names.append(name)
        return names

    def weight_spec(self, name: str) -> WeightSpec:
        """The `WeightSpec` of one weight name; unknown names list what exists."""
        spec = self._weights.get(name)
        if spec is None:
            near = [n for n in self._weights if n.split(".")[-1] == name.split(".")[-1]][:6]
            hint = f" Similar names: {', '.join(near)}." if near else ""
            layer = Site("param", name).layer
            if layer is not None and layer >= self.n_layers:
                raise KeyError(f"layer {layer} out of range: {self.model_id} has layers 0..{self.n_layers - 1}")
            raise KeyError(
                f"{self.model_id} has no weight {name!r}.{hint} Per block: "
                f"{', '.join(sorted({n.split('.', 2)[2] for n in self._weights if n.startswith('blocks.0.')}))}; "
                f"top level: {', '.join(n for n in self._weights if not n.startswith('blocks.'))}"
            )
        return spec

    def weight(self, site: str | Site) -> Tensor:
        """Writable TL-layout view of a weight or of a slice of it (``blocks.3.mlp.W_out[401]``)."""
        site = self.check_site(site)
        if site.kind != "param":
            raise ValueError(f"{site} is an activation site, not a weight; use a name like blocks.0.mlp.W_out")
        view = self._weights[site.name].view
        return view[site.index] if site.index else view

    @torch.no_grad()
    def set_weights(self, values: "dict[str, Tensor]", masks: "Mapping[str, Tensor] | None" = None) -> None:
        """Copy each tensor into the weight (or slice) it names, in place; with ``masks``, each
        value is the vector of that weight's masked entries (``view[mask]`` order)."""
        for name, value in values.items():
            view = self.weight(name)
            if masks is None:
                view.copy_(value)
            else:
                view[masks[name].to(view.device)] = value.to(view)

    @contextlib.contextmanager
    def restoring(self, names: Sequence[str], masks: "Mapping[str, Tensor] | None" = None) -> Iterator[dict[str, Tensor]]:
        """Snapshot the named weights (only their ``masks`` entries, if given) and put them back
        bit for bit on exit, errors included; yields the snapshot (name -> cloned tensor)."""
        if masks is None:
            saved = {n: self.weight(n).detach().clone() for n in names}
        else:
            saved = {n: self.weight(n).detach()[masks[n].to(self.device)].clone() for n in names}
        try:
            yield saved
        finally:
            self.set_weights(saved, masks)

    def parameters_by_name(self) -> dict[str, Tensor]:
        """Every weight's underlying parameter (in its own layout, not the TL view) by TL name,
        tied weights once: what weight files store, independent of the bridge's module names."""
        return {n: self._weights[n].param.detach() for n in self.weight_names()}

    @torch.no_grad()
    def load_parameters_by_name(self, state: "Mapping[str, Tensor]") -> None:
        """Copy a `parameters_by_name` state into this model; every weight must be there."""
        names = self.weight_names()
        missing = [n for n in names if n not in state]
        extra = [n for n in state if n not in self._weights]
        if missing or extra:
            raise ValueError(f"weight file does not fit {self.model_id}: missing {missing[:4]}, unknown {extra[:4]}")
        for n in names:
            param = self._weights[n].param
            if tuple(state[n].shape) != tuple(param.shape):
                raise ValueError(f"{n}: file has shape {tuple(state[n].shape)}, the model {tuple(param.shape)}")
            param.copy_(state[n])

    def parameter_count(self, names: Sequence[str] | None = None) -> int:
        """Number of scalar weights in ``names`` (default: all, tied counted once)."""
        return sum(self._weights[n].param.numel() for n in (names or self.weight_names()))

    def weights_hash(self) -> str:
        """SHA-256 of every weight's bytes, in model order: identifies the exact weights.

        Computed once per weight version: each parameter's in-place version counter (bumped by
        every write through torch, views and optimiser steps included) is remembered with the
        digest state after it, so an unchanged model costs no copy and an edit re-reads only
        the weights from the first changed one on (a GPU model is not copied to the CPU on
        every memoised call). Writes through ``param.data`` bypass the counter; use views.
        """
        names = self.weight_names()
        versions = [(self._weights[n].param._version, self._weights[n].param.data_ptr()) for n in names]
        states = self._hash_states
        start = 0
        while start < len(names) and start < len(states) and states[start][0] == versions[start]:
            start += 1
        digest = states[start - 1][1].copy() if start else hashlib.sha256()
        del states[start:]
        for name, version in zip(names[start:], versions[start:]):
            tensor = self._weights[name].param.detach().contiguous().cpu()
            digest.update(name.encode())
            digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
            states.append((version, digest.copy()))
        return (states[-1][1] if states else hashlib.sha256()).hexdigest()

    # ------------------------------------------------------------------ sites
    @property
    def hook_names(self) -> frozenset[str]:
        """Every hook name the bridge exposes, legacy aliases included."""
        return self._hook_names

    def hook_point(self, name: str):
        """The `HookPoint` module behind a hook name (aliases resolved)."""
        self.check_site(Site("hook", name))
        return self.bridge.hook_dict[name]

    def check_site(self, site: str | Site) -> Site:
        """Parse and validate a site against this model; errors say what exists."""
        site = Site.parse(site) if isinstance(site, str) else site
        layer = site.layer
        if layer is not None and layer >= self.n_layers:
            raise ValueError(f"layer {layer} out of range in {site}: {self.model_id} has layers 0..{self.n_layers - 1}")
        if site.kind == "param":
            spec = self.weight_spec(site.name)
            shape = spec.shape
            if len(site.index) > len(shape):
                raise ValueError(f"{site}: {site.name} has {len(shape)} dimensions {shape}, got {len(site.index)} indices")
            for dim, (i, size) in enumerate(zip(site.index, shape)):
                if i >= size:
                    raise IndexError(f"{site}: index {i} out of range for dimension {dim} of {site.name} (size {size})")
            return site
        if site.name not in self._hook_names:
            block = sorted(n.split(".", 2)[2] for n in self._hook_names if n.startswith("blocks.0."))
            raise ValueError(
                f"{self.model_id} has no hook {site.name!r}. Hooks per block include: "
                f"{', '.join(h for h in block if h.startswith(('hook_', 'mlp.hook_', 'attn.hook_')))}"
            )
        width = self.hook_width(site.name)
        if site.kind == "hook" and site.index and width is not None and site.index[0] >= width:
            raise IndexError(f"{site}: unit {site.index[0]} out of range ({site.name} has {width} units, 0..{width - 1})")
        if site.kind in DICTIONARY_KINDS:
            module = self._dictionaries.get((site.kind, site.name))
            if module is None:
                raise ValueError(f"no {site.kind} is attached at {site.name}; attach one with model.attach(...)")
            size = int(getattr(module, "n_latents"))
            if site.index[0] >= size:
                raise IndexError(f"{site}: latent {site.index[0]} out of range ({site.kind} has {size} latents)")
        return site

    def hook_width(self, name: str) -> int | None:
        """Size of the last dimension of the activation at a hook, where the config fixes it
        (residual stream and block outputs: d_model; MLP pre/post activations: d_mlp); None
        for the others (attention's per-head hooks), whose unit indices are checked in the forward."""
        if name.endswith(("mlp.hook_pre", "mlp.hook_post", "mlp.hook_pre_linear")):
            return self.d_mlp
        if name.endswith(("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out", "hook_embed")):
            return self.d_model
        return None

    def attach(self, kind: str, hook: str, module: torch.nn.Module) -> None:
        """Register a dictionary (SAE / codebook with an ``n_latents`` attribute) at a hook."""
        if kind not in DICTIONARY_KINDS:
            raise ValueError(f"kind must be one of {DICTIONARY_KINDS}, got {kind!r}")
        self.check_site(Site("hook", hook))
        if not hasattr(module, "n_latents"):
            raise TypeError("an attached dictionary needs an n_latents attribute")
        self._dictionaries[(kind, hook)] = module

    def dictionary(self, kind: str, hook: str) -> torch.nn.Module:
        """The dictionary attached at a hook (see `attach`)."""
        self.check_site(Site(kind, hook, (0,)))  # type: ignore[arg-type]
        return self._dictionaries[(kind, hook)]

    # ------------------------------------------------------------------ text
    def tokenize(self, texts: Sequence[str], *, prepend_bos: bool | None = None) -> TokenBatch:
        """Right-padded token ids and attention mask for a list of texts."""
        bos = self.prepend_bos if prepend_bos is None else prepend_bos
        rows = [self.encode(t, prepend_bos=bos) for t in texts]
        return TokenBatch(*pad(rows, self.pad_token_id, self.n_ctx))

    def encode(self, text: str, *, prepend_bos: bool = False) -> list[int]:
        """Token ids of one text (no padding)."""
        ids = list(self.tokenizer.encode(text, add_special_tokens=False))
        if prepend_bos:
            ids = [self.bos_token_id, *ids]
        return ids

    @property
    def bos_token_id(self) -> int:
        tok = self.tokenizer
        return int(tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id)

    @property
    def pad_token_id(self) -> int:
        tok = self.tokenizer
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        return int(pad_id)

    @property
    def eos_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    def to_tokens(self, text: str | Sequence[str]) -> Tensor:
        """Token ids ``[batch, pos]`` (BOS prepended when this model uses one; right-padded)."""
        return self.tokenize([text] if isinstance(text, str) else list(text)).tokens

    def to_str_tokens(self, text: str) -> list[str]:
        """The text's tokens as strings (with the BOS token when this model prepends one)."""
        ids = self.encode(text, prepend_bos=self.prepend_bos)
        return [self.tokenizer.decode([i]) for i in ids]

    def forward(self, tokens: Tensor, **kwargs) -> Tensor:
        """Logits ``[batch, pos, d_vocab]`` for token ids ``[batch, pos]``."""
        if tokens.shape[-1] > self.n_ctx:
            raise ValueError(f"sequence of {tokens.shape[-1]} tokens exceeds {self.model_id}'s context of {self.n_ctx}")
        return self.bridge(tokens.to(self.device), **kwargs)

    __call__ = forward

    @torch.no_grad()
    def generate(self, prompts: Sequence[str] | str, max_new_tokens: int = 8, *, batch_size: int = 64) -> list[str] | str:
        """Greedy continuations of prompts (batched, right-padded, no sampling)."""
        single = isinstance(prompts, str)
        prompts = [prompts] if single else list(prompts)
        outs: list[str] = []
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            outs.extend(self._greedy(chunk, max_new_tokens))
        return outs[0] if single else outs

    def _greedy(self, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
        rows = [self.encode(p, prepend_bos=self.prepend_bos) for p in prompts]
        lengths = torch.tensor([len(r) for r in rows])
        width = min(int(lengths.max()) + max_new_tokens, self.n_ctx)
        tokens = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        for i, r in enumerate(rows):
            tokens[i, : len(r)] = torch.tensor(r)
        new = [[] for _ in rows]
        done = torch.zeros(len(rows), dtype=torch.bool)
        for _ in range(max_new_tokens):
            if int(lengths.max()) >= width:
                break
            end = int(lengths.max())
            logits = self.forward(tokens[:, :end])
            nxt = logits[torch.arange(len(rows)), lengths - 1].argmax(-1).cpu()
            for i, t in enumerate(nxt.tolist()):
                if not done[i]:
                    new[i].append(t)
                    done[i] = t == self.eos_token_id
            tokens[torch.arange(len(rows)), lengths] = nxt
            lengths = lengths + 1
            if bool(done.all()):
                break
        return [self.tokenizer.decode([t for t in ids if t != self.eos_token_id]) for ids in new]

    # ------------------------------------------------------------------ activations
    def run_with_cache(self, tokens: Tensor, names: Sequence[str | Site]) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits and the activations at the given hook sites (only those)."""
        wanted = [self.check_site(n).name for n in names]
        logits, cache = self.bridge.run_with_cache(tokens.to(self.device), names_filter=lambda n: n in wanted)
        return logits, {n: cache[n] for n in wanted}

    def hook_count(self) -> int:
        """Number of forward/backward hooks currently registered on the bridge's hook points."""
        seen, total = set(), 0
        for hp in self.bridge.hook_dict.values():
            if id(hp) in seen:
                continue
            seen.add(id(hp))
            total += len(hp._forward_hooks) + len(hp._backward_hooks)
        return total

    def nnsight(self):
        """An `nnsight.NNsight` wrapper of the same bridge (edits through it act on this model).

        >>> nn_model = model.nnsight()
        >>> with nn_model.trace(tokens):
        ...     nn_model.blocks[1].hook_out.output[:, -1] = 0
        ...     logits = nn_model.output.save()
        """
        from nnsight import NNsight

        return NNsight(self.bridge)

    def named_weights(self) -> Iterator[tuple[str, Tensor]]:
        """(name, TL-layout view) for every weight, tied weights once."""
        for name in self.weight_names():
            yield name, self._weights[name].view
