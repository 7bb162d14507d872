"""Localizers: score model components for a target (scores only; no thresholds, no editing, no I/O)."""

from mechunlearn.locate.concept_vectors import (
    ConceptFileConfig,
    ConceptScan,
    ConceptVectors,
    NeedleConfig,
    ScanConfig,
    ValidateConfig,
    build_concept_file,
    check_questions,
    locate_concepts,
    needle,
    reference_ids,
    scan,
    validate,
    validation_summary,
)

__all__ = [
    "ConceptFileConfig",
    "ConceptScan",
    "ConceptVectors",
    "NeedleConfig",
    "ScanConfig",
    "ValidateConfig",
    "build_concept_file",
    "check_questions",
    "locate_concepts",
    "needle",
    "reference_ids",
    "scan",
    "validate",
    "validation_summary",
]
