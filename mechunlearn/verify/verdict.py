"""A verdict per edited model: **removed**, **hidden**, **not forgotten** or **inconclusive**.

Read from the card's summary (`card_summary`: one row per role) against the exact-unlearning
oracle (role ``retain``, the model trained without the forget set). Behaviour decides whether the
model *says* it forgot; the faithful verifiers decide whether the knowledge is gone — those that
compare with a model that never learned the data (OpenUnlearning's meta-evaluation, arXiv
2506.12618; UDS, arXiv 2605.24614):

| check              | summary column            | passes when                                         |
| ------------------ | ------------------------- | --------------------------------------------------- |
| behaviour          | ``exact_match:forget``    | ≤ the oracle's + ``behaviour_margin``               |
| probes             | ``probe_forget_best``     | ≤ the oracle's floor + ``probe_margin``             |
| relearning         | ``relearn_other_half_em`` | ≤ the oracle's after the same steps + ``recovery_margin`` |
| quantization       | ``quantize_int8_em``, ``quantize_int4_em`` | ≤ the oracle's + ``recovery_margin`` |
| patching depth     | ``depth_score``           | ≥ ``min_depth``                                     |

- **not forgotten**: behaviour fails (the model still answers).
- **removed**: behaviour passes and every internal / attack check present passes, with at least
  ``min_checks`` of them present.
- **hidden**: behaviour passes and some internal / attack check fails (the evidence names it).
- **inconclusive**: no oracle row, no behaviour column, or fewer than ``min_checks`` checks.

The margins live in one place (`VerdictConfig`); every verdict carries its evidence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

VERDICTS = ("removed", "hidden", "not forgotten", "inconclusive")
REFERENCE_ROLES = ("original", "retain")


@dataclass(frozen=True)
class VerdictConfig:
    """The margins of the verdict (see the module docstring)."""

    behaviour_margin: float = 0.1
    """Forget exact match at most this above the oracle's counts as forgotten (0.1: the demo's and
    the notebooks' early-stop criterion, forget exact match ≤ 0.1)."""
    probe_margin: float = 0.05
    """Forget probe accuracy (best layer, refit) at most this above the oracle's floor."""
    recovery_margin: float = 0.05
    """Forget exact match after an attack (relearning, quantization) at most this above the oracle's."""
    min_depth: float = 0.8
    """Patching depth score at least this."""
    min_checks: int = 2
    """Internal / attack checks needed for a verdict other than inconclusive."""

    def __post_init__(self) -> None:
        for name in ("behaviour_margin", "probe_margin", "recovery_margin"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.min_depth <= 1:
            raise ValueError(f"min_depth must be in [0, 1], got {self.min_depth}")
        if self.min_checks < 1:
            raise ValueError(f"min_checks must be >= 1, got {self.min_checks}")


BEHAVIOUR = "exact_match:forget"
CHECKS = {  # column: (check name, margin attribute, higher is better)
    "probe_forget_best": ("probes", "probe_margin", False),
    "relearn_other_half_em": ("relearning", "recovery_margin", False),
    "quantize_int8_em": ("quantization int8", "recovery_margin", False),
    "quantize_int4_em": ("quantization int4", "recovery_margin", False),
    "depth_score": ("patching depth", "min_depth", True),
}


def _present(row: pd.Series, column: str) -> bool:
    return column in row.index and pd.notna(row[column])


def verdicts(summary: pd.DataFrame, config: VerdictConfig = VerdictConfig()) -> pd.DataFrame:
    """One row per edited role of ``summary`` (index: roles, as `card_summary` gives):
    ``verdict``, ``evidence`` (each check's value against its bar), ``failed`` (the checks that
    failed) and ``n_checks``."""
    rows = []
    oracle = summary.loc["retain"] if "retain" in summary.index else None
    for role, row in summary.iterrows():
        if role in REFERENCE_ROLES:
            continue
        evidence, failed = [], []
        if oracle is None or not _present(row, BEHAVIOUR) or not _present(oracle, BEHAVIOUR):
            why = "no oracle (role 'retain') in the card" if oracle is None else f"no {BEHAVIOUR} in the card"
            rows.append({"model": role, "verdict": "inconclusive", "evidence": why, "failed": "", "n_checks": 0})
            continue
        bar = oracle[BEHAVIOUR] + config.behaviour_margin
        forgotten = row[BEHAVIOUR] <= bar
        evidence.append(f"behaviour {row[BEHAVIOUR]:.3f} {'≤' if forgotten else '>'} {bar:.3f}")
        n = 0
        for column, (name, margin, higher) in CHECKS.items():
            if not _present(row, column):
                continue
            if higher:
                bar, ok = getattr(config, margin), row[column] >= getattr(config, margin)
            else:
                if not _present(oracle, column):
                    continue
                bar = oracle[column] + getattr(config, margin)
                ok = row[column] <= bar
            n += 1
            evidence.append(f"{name} {row[column]:.3f} {('≥' if ok else '<') if higher else ('≤' if ok else '>')} {bar:.3f}")
            if not ok:
                failed.append(name)
        if not forgotten:
            verdict = "not forgotten"
        elif failed:
            verdict = "hidden"
        elif n < config.min_checks:
            verdict = "inconclusive"
            evidence.append(f"only {n} of the {config.min_checks} checks needed")
        else:
            verdict = "removed"
        rows.append({"model": role, "verdict": verdict, "evidence": "; ".join(evidence), "failed": ", ".join(failed), "n_checks": n})
    out = pd.DataFrame(rows, columns=["model", "verdict", "evidence", "failed", "n_checks"])
    out.attrs["config"] = asdict(config)
    return out


__all__ = ["VERDICTS", "VerdictConfig", "verdicts"]
