"""Scripted ablation studies: a study file, many runs, one table, one report.

>>> from mechunlearn.study import load_study, run_study, write_report, load_results
>>> study = load_study("studies/smoke.yaml")            # validated; see `mechunlearn.study.spec`
>>> summary = run_study(study, "reports/smoke")          # resumable; executor="ray", workers=2
>>> write_report("reports/smoke")                        # reports/smoke/index.html
>>> results = load_results("reports/smoke")              # the long table (pandas)

Each run: **locate → edit → verify → revert**. A run's rows are keyed by ``run_id``, the hash of its
config (model, target, method, every parameter, seed, verifiers); finished runs are skipped when
the study is run again, failed runs are recorded with their error and traceback (and retried next
time), and Ctrl-C loses nothing finished.

Registering a method
--------------------
A method is a function ``edit(model, target, params, seed) -> Edit`` plus its parameters with
defaults; it must leave the model unchanged (return the edit, don't keep it applied). Add the
registration to `mechunlearn/study/builtins.py` so the CLI, Ray workers and reports all see it::

    from mechunlearn.study.registry import METHODS, Method, unlearn_edit, unlearn_params

    def needle(model, target, params, seed):
        from mechunlearn.locate.concept_vectors import needle
        return needle(model, ..., sigma=params["sigma"], seed=seed)

    METHODS.add("needle", Method(needle, {"sigma": 0.1, "steps": 20}, description="..."))

With a localizer step, give ``locate(model, target, params, seed) -> Selection | MaskSelection``;
the edit then also receives ``selection=``, and the runner records the selection's size and times
both steps separately. `unlearn_edit` / `unlearn_params` turn any registered loss into a masked
edit, so a localizer + loss pair is three lines::

    def salun_mask(model, target, params, seed):
        from mechunlearn.locate.saliency import saliency
        return saliency(model, target).frac(params["keep_ratio"])

    METHODS.add("salun", Method(unlearn_edit("graddiff"), unlearn_params("graddiff", keep_ratio=0.5),
                                locate=salun_mask, description="SalUn mask + GradDiff"))

(parameters `unlearn` does not know, like ``keep_ratio``, are declared for the study and ignored
by the edit). Optional fields: ``diagnostics(model,
target, edit, selection) -> DataFrame`` (metric/value rows, e.g. a SLUG layer sweep), ``figures``
(functions DataFrame → Figure, drawn in the report from this method's rows), ``context=True``
(the edit gets ``ctx=``, a `RunContext`, e.g. to load the retain model).

Registering a verifier
----------------------
``verify(model, target, params, ctx) -> Result``; the model is edited while it runs and anything
the verifier changes (a relearning attack's fine-tuning) must be reverted before it returns — the
runner checks the weights hash and hook count after each run and fails the run otherwise.
``ctx.retain_model()`` is the retain model of the run's forget split, ``ctx.edit`` the edit::

    from mechunlearn.study.registry import VERIFIERS, Verifier

    def card(model, target, params, ctx):
        from mechunlearn.verify.card import evaluation_card
        return evaluation_card(model, target, retain_model=ctx.retain_model(), edit=ctx.edit,
                               run_id=ctx.run_id, method=ctx.method, seed=ctx.seed, **params)

    VERIFIERS.add("card", Verifier(card, {"relearn_steps": 10}, headline=("forget_quality", "retain_utility"),
                                   figures=(probe_heatmap,)))

``headline`` metrics appear in the report's summary table; ``figures`` in its figure section.

Target sources (`TARGETS`) build a `StudyTarget` (the edit's target and the verifiers' target)
from the loaded model; ``world`` (forget splits of bios-tiny's world) ships with the package.
Study files may also list ``imports:`` — modules imported before validation and in every worker —
for methods kept outside the package.
"""

from mechunlearn.study import builtins as _builtins  # noqa: F401 - registers the shipped methods
from mechunlearn.study.registry import METHODS, TARGETS, VERIFIERS, Method, RunContext, StudyTarget, TargetSource, Verifier, unlearn_edit, unlearn_params
from mechunlearn.study.report import load_results, summary_table, write_report
from mechunlearn.study.run import RunOutcome, execute_run
from mechunlearn.study.runner import StudySummary, run_study
from mechunlearn.study.spec import MethodSpec, ModelSpec, RunSpec, Study, StudyError, TargetSpec, VerifierSpec, load_study, study_from_dict

__all__ = [
    "METHODS",
    "TARGETS",
    "VERIFIERS",
    "Method",
    "MethodSpec",
    "ModelSpec",
    "RunContext",
    "RunOutcome",
    "RunSpec",
    "Study",
    "StudyError",
    "StudySummary",
    "StudyTarget",
    "TargetSource",
    "TargetSpec",
    "Verifier",
    "VerifierSpec",
    "execute_run",
    "load_results",
    "load_study",
    "run_study",
    "study_from_dict",
    "summary_table",
    "unlearn_edit",
    "unlearn_params",
    "write_report",
]
