"""Verifiers: behaviour (and, as they land, traces, probes, attacks, membership inference)."""

from mechunlearn.verify.behavior import behavior, score_items

__all__ = ["behavior", "score_items"]
