"""Plotly figures: every function takes a tidy DataFrame and returns a ``plotly`` Figure (never
``.show()``). Modules, imported on first use: `study` (a study's results: trade-offs, splits,
sweeps, run times), `verify` (probe heatmaps, relearning curves, membership-inference ROC, Δθ per
layer), `meta` (the verifiers' faithfulness vs robustness), `weight_space` (Δθ per layer and module, mask density, the SLUG Pareto plot, trade-offs).

>>> from mechunlearn import figures
>>> fig = figures.study.tradeoff(results)           # or figures.probe_heatmap(card.frame)
>>> figures.save(fig, "out/tradeoff")               # out/tradeoff.html (+ .png with Chromium)
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from mechunlearn.core.result import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    import plotly.graph_objects as go

log = logging.getLogger(__name__)

_MODULES = ("features", "localization", "meta", "redirection", "study", "verify", "weight_space")
_SHORTCUTS = {"probe_heatmap": "verify", "relearning_curves": "verify", "mia_roc": "verify", "delta_by_layer": "weight_space"}
"""Top-level names kept for the verification figures (``figures.mia_roc``)."""

__all__ = ["CHROMIUM_FLAGS", "chromium", "save", *_MODULES, *_SHORTCUTS]

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
"""Flags of every headless Chromium we start (no network chatter, no sandbox as root, no GPU)."""

CHROMIUM_HINT = "install Chromium (Debian: apt-get install -y chromium) or kaleido (pip install kaleido)"


def __getattr__(name: str):
    # submodules load lazily: plotly and the verifiers stay out of `import mechunlearn.figures`
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _SHORTCUTS:
        return getattr(importlib.import_module(f"{__name__}.{_SHORTCUTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def need_columns(frame, columns, figure: str) -> None:
    """Raise a clear error when a figure's input frame lacks columns or rows."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{figure} needs the columns {missing}; the frame has {list(frame.columns)}")
    if frame.empty:
        raise ValueError(f"{figure} got an empty frame")


def chromium() -> str | None:
    """Path of a Chromium / Chrome executable on PATH, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _kaleido() -> bool:
    return importlib.util.find_spec("kaleido") is not None


def save(fig: "go.Figure", path: str | Path, *, png: bool | None = None, width: int = 900, height: int = 520) -> list[Path]:
    """Write ``fig`` as self-contained HTML (plotly.js inlined) at ``path`` (suffix ``.html``), and
    as PNG beside it: ``png=None`` when Chromium or kaleido is available (else logs how to get
    them), ``True`` always (raises if neither is), ``False`` never. Returns the written paths."""
    path = Path(path)
    html = path.with_suffix(".html")
    atomic_write_text(html, fig.to_html(include_plotlyjs=True, full_html=True))
    written = [html]
    if png is False:
        return written
    browser = chromium()
    if browser is None and not _kaleido():
        if png:
            raise RuntimeError(f"cannot write {path.with_suffix('.png')}: no PNG renderer; {CHROMIUM_HINT}")
        log.warning("wrote %s only; for PNG files too, %s", html, CHROMIUM_HINT)
        return written
    target = path.with_suffix(".png")
    if browser is not None:
        atomic_write_bytes(target, lambda tmp: _screenshot(browser, fig, tmp, width, height))
    else:
        atomic_write_bytes(target, lambda tmp: fig.write_image(tmp, format="png", width=width, height=height))
    written.append(target)
    return written


def _screenshot(browser: str, fig: "go.Figure", out: Path, width: int, height: int) -> None:
    """Render ``fig`` to a PNG with headless Chromium's ``--screenshot``."""
    with tempfile.TemporaryDirectory(prefix="mechunlearn-png-") as tmp:
        page = Path(tmp) / "figure.html"
        page.write_text(
            fig.to_html(include_plotlyjs=True, full_html=True, default_width=f"{width}px", default_height=f"{height}px", config={"displayModeBar": False})
        )
        shot = Path(tmp) / "figure.png"
        cmd = [
            browser, *CHROMIUM_FLAGS, f"--user-data-dir={Path(tmp) / 'profile'}", "--hide-scrollbars",
            f"--window-size={width},{height}", "--virtual-time-budget=10000", f"--screenshot={shot}", page.as_uri(),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0 or not shot.exists():
            raise RuntimeError(f"Chromium could not render the PNG (exit {done.returncode}): {done.stderr[-2000:]}")
        shutil.copyfile(shot, out)
