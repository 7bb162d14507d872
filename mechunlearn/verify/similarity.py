"""Answer similarity: sentence BLEU and ROUGE, as ConceptVectors compares an edited model's answers
with the unedited model's and TOFU / MUSE compare generations with ground truths.

BLEU works on word tokens: lower-cased runs of letters/digits, and single punctuation marks
(``"Tokyo, Japan."`` → ``["tokyo", ",", "japan", "."]``). ROUGE is the ``rouge-score`` package's
(Google's reimplementation of Lin 2004, which TOFU, MUSE and open-unlearning use): lower-cased
alphanumeric tokens, punctuation dropped, Porter stemming.

| function   | definition                                                                 |
| ---------- | -------------------------------------------------------------------------- |
| `bleu`     | BP · exp(mean_n log p_n), n = 1..4 (Papineni et al. 2002); p_1 = clipped unigram precision, p_n = (m_n + 1)/(c_n + 1) for n ≥ 2 (Lin & Och 2004 add-one smoothing) |
| `rouge_l`  | F_β of LCS precision LCS/|hyp| and recall LCS/|ref| (``rouge-score``), β = 1  |
| `rouge`    | ``rouge1_recall``, ``rougeL_f1``, ``rougeL_recall`` (open-unlearning's keys)   |

Short answers are the norm here (a few words), which is why BLEU is smoothed: unsmoothed, any
answer shorter than four words scores 0 even when identical. With Lin & Och's smoothing an answer
identical to its reference scores exactly 1 at any length, and an answer sharing no word scores 0.
(NLTK's ``method2`` differs only for hypotheses shorter than ``n`` words: it counts a missing
n-gram order as ``0/1`` instead of ``0/0``, so an identical one-word answer gets 0.59 there.)
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from typing import Sequence

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens of a text."""
    if not isinstance(text, str):
        raise TypeError(f"expected a string, got {type(text).__name__}")
    return _TOKEN_RE.findall(text.lower())


def _as_tokens(text: str | Sequence[str]) -> list[str]:
    return words(text) if isinstance(text, str) else list(text)


def ngram_counts(tokens: Sequence[str], n: int) -> Counter:
    """Counts of the ``n``-grams of a token list."""
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu(hypothesis: str | Sequence[str], reference: str | Sequence[str], *, max_order: int = 4, smooth: bool = True) -> float:
    """Sentence BLEU of ``hypothesis`` against one ``reference`` (strings or token lists), in [0, 1].

    ``smooth=True`` applies add-one smoothing to orders n ≥ 2 (see the module docstring);
    ``smooth=False`` is Papineni's unsmoothed BLEU (0 whenever an order has no match).
    Two empty texts score 1; an empty hypothesis against a non-empty reference scores 0.

    >>> bleu("Paris, France.", "Paris, France.")
    1.0
    """
    if max_order < 1:
        raise ValueError(f"max_order must be >= 1, got {max_order}")
    hyp, ref = _as_tokens(hypothesis), _as_tokens(reference)
    if not hyp or not ref:
        return 1.0 if not hyp and not ref else 0.0
    log_sum = 0.0
    for n in range(1, max_order + 1):
        h, r = ngram_counts(hyp, n), ngram_counts(ref, n)
        matches = sum(min(c, r[g]) for g, c in h.items())
        total = sum(h.values())
        if smooth and n > 1:
            matches, total = matches + 1, total + 1
        if matches == 0:
            return 0.0
        log_sum += math.log(matches / total)
    brevity = 1.0 if len(hyp) > len(ref) else math.exp(1.0 - len(ref) / len(hyp))
    return float(brevity * math.exp(log_sum / max_order))


@functools.lru_cache(maxsize=None)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)


def rouge(hypothesis: str, reference: str) -> dict[str, float]:
    """``rouge1_recall``, ``rougeL_f1`` and ``rougeL_recall`` of ``hypothesis`` (a generation)
    against ``reference`` (the ground truth), from the ``rouge-score`` package with Porter
    stemming, as open-unlearning reports them (``src/evals/metrics/utils.py:254-266``).

    >>> rouge("Paris is the capital", "Paris")["rougeL_recall"]
    1.0
    """
    for text in (hypothesis, reference):
        if not isinstance(text, str):
            raise TypeError(f"ROUGE compares strings, got {type(text).__name__}")
    scores = _scorer().score(reference, hypothesis)
    return {"rouge1_recall": scores["rouge1"].recall, "rougeL_f1": scores["rougeL"].fmeasure, "rougeL_recall": scores["rougeL"].recall}


def rouge_l(hypothesis: str, reference: str, *, beta: float = 1.0) -> float:
    """ROUGE-L F-measure of ``hypothesis`` against ``reference``, in [0, 1] (``rouge-score``'s
    LCS precision and recall, lower-cased alphanumeric tokens, Porter stemming).

    ``beta`` weights recall over precision (1: the F1 that ``rouge-score`` reports). An empty
    text on either side scores 0 (``rouge-score``'s convention).

    >>> rouge_l("the cat sat", "the cat sat down")     # P = 1, R = 3/4
    0.8571428571428571
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not isinstance(hypothesis, str) or not isinstance(reference, str):
        raise TypeError("ROUGE compares strings")
    score = _scorer().score(reference, hypothesis)["rougeL"]
    if beta == 1.0:
        return float(score.fmeasure)
    precision, recall = score.precision, score.recall
    if precision == 0 or recall == 0:
        return 0.0
    b2 = beta * beta
    return float((1 + b2) * precision * recall / (recall + b2 * precision))
