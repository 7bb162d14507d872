"""Verifiers: does an edit remove knowledge or hide it? (EVALS.md)

- `behavior` — greedy exact match, answer log-prob and normalised probability per split.
- `probe_accuracy` — per-layer linear probes, fit on the original model or refit on the edited one.
- `weight_traces`, `vector_traces`, `activation_shift` — intrinsic traces of the edit.
- `attack_suite` — held-out paraphrases, few-shot prompts, in-context reintroduction, relearning.
- `membership_inference`, `tofu_metrics` — LOSS / zlib / Min-K% / Min-K%++ / gradnorm / reference
  AUCs and PrivLeak; truth ratio, forget quality, ROUGE, memorization and retain utility against
  the retain model, as open-unlearning computes them (scoring protocols: `verify.protocol`).
- `choice_accuracy` — multiple-choice accuracy by the log-likelihood of each choice (lm-eval-harness).
- `evaluation_card` — all of the above in one `Result`.
- `meta` — the verifiers measured against the oracle: faithfulness and robustness over a population
  of models with known knowledge status (`verify.meta`, arXiv 2506.12618 §4; imported on demand).
"""

from mechunlearn.verify.attacks import AttackConfig, attack_suite
from mechunlearn.verify.behavior import behavior, exact_match_by_set, score_items
from mechunlearn.verify.card import CardConfig, card_summary, evaluation_card
from mechunlearn.verify.choice import choice_accuracy
from mechunlearn.verify.mia import MIAConfig, membership_inference
from mechunlearn.verify.probes import ProbeConfig, probe_accuracy, probe_summary
from mechunlearn.verify.tofu import TofuConfig, tofu_metrics
from mechunlearn.verify.traces import vector_traces
from mechunlearn.verify.weight_traces import activation_shift, weight_traces

__all__ = [
    "AttackConfig",
    "CardConfig",
    "MIAConfig",
    "ProbeConfig",
    "TofuConfig",
    "activation_shift",
    "attack_suite",
    "behavior",
    "card_summary",
    "choice_accuracy",
    "evaluation_card",
    "exact_match_by_set",
    "membership_inference",
    "probe_accuracy",
    "probe_summary",
    "score_items",
    "tofu_metrics",
    "vector_traces",
    "weight_traces",
]
