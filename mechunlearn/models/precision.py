"""Which precision the one training loop uses: chosen from what the hardware runs fast, never assumed.

bfloat16 autocast (bf16 matmuls, float32 weights, gradients and optimiser state) pays only where
the hardware has bf16 arithmetic. Measured on 2-core Xeons of this project's machines:

| CPU                                   | bios-tiny step, float32 | bfloat16 autocast |
| ------------------------------------- | ----------------------- | ----------------- |
| AVX512-BF16 / AMX                     | 0.165 s                 | 0.068 s           |
| AVX-512 without AVX512-BF16 (emulated)| 0.42–0.55 s             | 1.28–1.38 s       |

So ``autocast="auto"`` resolves per device:

* CUDA: ``bfloat16`` where ``torch.cuda.is_bf16_supported()`` (Ampere and newer), else float32.
* CPU without a bf16 instruction set in ``/proc/cpuinfo`` (x86 ``avx512_bf16`` / ``amx_bf16``,
  Arm ``bf16``): float32, no measurement needed (bf16 is emulated there).
* CPU with one: a short measured probe (forward + backward of an MLP block, float32 against
  bf16 autocast, about a second) decides; the verdict is cached in
  ``$MECHUNLEARN_HOME/precision.json`` per CPU model, flags, torch version and thread count.
* Anything else (MPS, unknown): float32.

``MECHUNLEARN_AUTOCAST=float32`` or ``=bfloat16`` overrides what ``auto`` resolves to (to time
the slower kind on a fast machine); explicit settings are always honoured. Every resolution
says why in its `Precision` record, which the loop puts in its `TrainLog` and builds put in
their provenance.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass
from typing import Iterator

import torch

log = logging.getLogger(__name__)

AUTOCAST_CHOICES = ("auto", "bfloat16", "float32", None)
"""Accepted values of ``TrainConfig.autocast`` (``None`` is float32)."""

ENV_OVERRIDE = "MECHUNLEARN_AUTOCAST"
"""Environment variable that overrides what ``auto`` resolves to (``float32`` or ``bfloat16``)."""

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
"""CPU flags (``/proc/cpuinfo``) that mean bf16 arithmetic in hardware (x86 AVX512-BF16, AMX; Arm BF16)."""

MIN_SPEEDUP = 1.2
"""The probe picks bfloat16 only if it is at least this much faster than float32."""


@dataclass(frozen=True)
class Precision:
    """A resolved precision choice and why it was made (goes into provenance)."""

    autocast: str
    """``float32`` or ``bfloat16``."""
    requested: str
    """What the config asked for (``auto``, ``float32``, ``bfloat16``)."""
    device: str
    """Device type it was resolved for."""
    reason: str
    """Why: explicit setting, CPU flags, the probe's measured speed-up, an override."""

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype, or ``None`` for plain float32."""
        return torch.bfloat16 if self.autocast == "bfloat16" else None

    def context(self):
        """The autocast context for the forward pass (a no-op for float32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device, dtype=self.dtype)

    def record(self) -> dict:
        """Plain dict for provenance."""
        return asdict(self)


def normalise(setting: str | None) -> str:
    """``None`` → ``float32``; anything outside `AUTOCAST_CHOICES` is refused."""
    if setting not in AUTOCAST_CHOICES:
        raise ValueError(f"autocast must be one of 'auto', 'bfloat16', 'float32' or None, got {setting!r}")
    return "float32" if setting is None else setting


def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags from ``/proc/cpuinfo`` (``None`` where that file does not exist)."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return frozenset(flags)


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the platform's processor string."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.lower().startswith(("model name", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _probe_step(dtype: torch.dtype | None, x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> None:
    ctx = torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with ctx:
        y = torch.nn.functional.gelu(x @ w1) @ w2
    y.float().pow(2).mean().backward()


def measure_cpu_speedup(repeats: int = 5, tokens: int = 2048, d_model: int = 256, d_mlp: int = 1024) -> dict:
    """Median time of one MLP-block forward + backward in float32 and under bfloat16 autocast
    (bios-tiny's shapes, a 64-row batch of 32 tokens); returns both and their ratio."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(tokens, d_model, generator=gen)
    w1 = torch.randn(d_model, d_mlp, generator=gen).mul_(0.05).requires_grad_()
    w2 = torch.randn(d_mlp, d_model, generator=gen).mul_(0.05).requires_grad_()
    seconds = {}
    for name, dtype in (("float32", None), ("bfloat16", torch.bfloat16)):
        _probe_step(dtype, x, w1, w2)  # warm-up (kernel selection, oneDNN primitives)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            _probe_step(dtype, x, w1, w2)
            times.append(time.perf_counter() - start)
        seconds[name] = sorted(times)[len(times) // 2]
    return {"float32_s": seconds["float32"], "bfloat16_s": seconds["bfloat16"], "speedup": seconds["float32"] / seconds["bfloat16"]}


def _cache_path():
    from mechunlearn.core.paths import home

    return home() / "precision.json"


def _cpu_key(flags: frozenset[str] | None) -> str:
    bf16 = sorted(flags & set(BF16_CPU_FLAGS)) if flags is not None else ["unknown"]
    return f"{cpu_name()}|{','.join(bf16)}|torch {torch.__version__}|{torch.get_num_threads()} threads"


def _cpu_choice() -> tuple[str, str]:
    flags = cpu_flags()
    if flags is not None and not flags & set(BF16_CPU_FLAGS):
        return "float32", "CPU has no bf16 instructions (no avx512_bf16 / amx_bf16 / bf16 flag): bfloat16 would be emulated"
    key = _cpu_key(flags)
    path = _cache_path()
    cache = {}
    if path.exists():
        try:
            cache = json.loads(path.read_text())
        except ValueError:
            log.warning("ignoring unreadable precision cache %s (it is measured again)", path)
    if key not in cache:
        measured = measure_cpu_speedup()
        measured["choice"] = "bfloat16" if measured["speedup"] >= MIN_SPEEDUP else "float32"
        cache[key] = measured
        from mechunlearn.core.result import atomic_write_text

        atomic_write_text(path, json.dumps(cache, indent=2))
        log.info("precision probe on %s: float32 %.4f s, bfloat16 %.4f s per step -> %s", key, measured["float32_s"], measured["bfloat16_s"], measured["choice"])
    m = cache[key]
    return m["choice"], f"measured probe on {key}: bfloat16 {m['speedup']:.2f}x float32's speed (needs {MIN_SPEEDUP}x)"


def resolve(setting: str | None, device: torch.device | str = "cpu") -> Precision:
    """The `Precision` the loop uses for ``setting`` on ``device`` (see the module docstring)."""
    requested = normalise(setting)
    device_type = torch.device(device).type
    if requested != "auto":
        return Precision(requested, requested, device_type, "explicit setting")
    override = os.environ.get(ENV_OVERRIDE)
    if override:
        if override not in ("float32", "bfloat16"):
            raise ValueError(f"${ENV_OVERRIDE} must be float32 or bfloat16, got {override!r}")
        return Precision(override, requested, device_type, f"${ENV_OVERRIDE}={override}")
    if device_type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision("bfloat16", requested, device_type, "CUDA device supports bfloat16")
        return Precision("float32", requested, device_type, "CUDA device without bfloat16 support")
    if device_type == "cpu":
        choice, reason = _cpu_choice()
        return Precision(choice, requested, device_type, reason)
    return Precision("float32", requested, device_type, f"no bfloat16 autocast policy for {device_type}")


@contextlib.contextmanager
def forced(choice: str) -> Iterator[None]:
    """Make ``auto`` resolve to ``choice`` inside the block (benchmarks, timing the slower kind)."""
    before = os.environ.get(ENV_OVERRIDE)
    os.environ[ENV_OVERRIDE] = choice
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ENV_OVERRIDE, None)
        else:
            os.environ[ENV_OVERRIDE] = before
