"""The ``mechunlearn`` command.

    mechunlearn build-model bios-tiny [--retain 0.1] [--rebuild] [--write-reference]
    mechunlearn eval bios-tiny [--split forget --split retain] [--forget-frac 0.1] [--out table.csv]
    mechunlearn eval smollm2-135m --data tests/data/tofu [--out table.csv]
    mechunlearn export-tofu bios-tiny OUT_DIR [--forget-frac 0.1] [--per-fact 2]
    mechunlearn concept-vectors gemma-3-270m [--out concept_vectors/gemma-3-270m.json]
    mechunlearn study run FILE [--executor local|ray] [--workers N] [--address ADDR] [--out DIR]
    mechunlearn study report DIR [--check]
    mechunlearn study compact DIR
    mechunlearn demo [--out reports/default] [--workers N]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import pandas as pd

log = logging.getLogger("mechunlearn")

FORGET_FRACS = (0.1, 0.05, 0.01)
WORLD_SIGMA = 100.0
"""Validation noise (x the vector's RMS entry) for concepts of the synthetic world (see `_concept_vectors`)."""


def _print_table(frame: pd.DataFrame, title: str) -> None:
    with pd.option_context("display.width", 120, "display.max_columns", 20, "display.float_format", "{:.3f}".format):
        print(f"\n{title}\n{frame.to_string()}")


def _recipe(args: argparse.Namespace):
    from mechunlearn.models.bios_tiny import BiosTinyRecipe

    return BiosTinyRecipe().small() if getattr(args, "quick", False) else BiosTinyRecipe()


def _build(args: argparse.Namespace) -> int:
    from mechunlearn.models import bios_tiny
    from mechunlearn.models.load import load_model

    if args.name != "bios-tiny":
        if args.retain is not None:
            raise SystemExit("--retain only applies to bios-tiny (the retain model is trained without the forget people)")
        start = time.perf_counter()
        model = load_model(args.name)
        print(f"{model!r} ready in {time.perf_counter() - start:.1f} s (nothing to train: it is read from local files)")
        return 0
    start = time.perf_counter()
    try:
        if args.write_reference:
            folder, gates = bios_tiny.write_reference(_recipe(args), retain_for=args.retain)
            _print_table(gates, f"{bios_tiny.model_id(args.retain)} gates (written to {folder} in {time.perf_counter() - start:.1f} s)")
            return 0
        model = bios_tiny.load(_recipe(args), retain_for=args.retain, rebuild=args.rebuild)
    except bios_tiny.GateError as err:
        _print_table(err.gates, "gates (FAILED, nothing saved)")
        print(str(err), file=sys.stderr)
        return 1
    gates = bios_tiny.gates_of(_recipe(args), retain_for=args.retain, source="build" if args.rebuild else "auto")
    _print_table(gates, f"{bios_tiny.model_id(args.retain)} gates ({model.meta['source']}, ready in {time.perf_counter() - start:.1f} s)")
    shipped = bios_tiny.reference_hash(_recipe(args), retain_for=args.retain)
    if args.rebuild and shipped is not None:
        same = "identical to" if shipped == model.meta["weights_hash"] else "different from"
        print(
            f"\nweights {model.meta['weights_hash'][:12]}… ({model.meta['precision']['autocast']}): {same} the shipped reference's "
            f"{shipped[:12]}…. load_model() keeps using the shipped weights; pass source='build' for this build."
        )
    return 0


def _target_for(model, forget_frac: float, paraphrase: str):
    from mechunlearn.world import World

    world_cfg = model.meta.get("world_config")
    if world_cfg is None:
        raise SystemExit(
            f"{model.model_id} has no synthetic world, so there is no forget/retain split to evaluate; "
            "use bios-tiny (concept targets for smollm2-135m come with concept_vectors/)"
        )
    return World(world_cfg).target(forget_frac=forget_frac, paraphrase=paraphrase)


def _eval(args: argparse.Namespace) -> int:
    from mechunlearn.core.result import Result
    from mechunlearn.models.load import load_model
    from mechunlearn.verify.behavior import behavior

    options = {"recipe": _recipe(args)} if args.name.startswith("bios-tiny") else {}
    model = load_model(args.name, **options)
    if args.data is not None:
        from mechunlearn.data import load_target

        target = load_target(args.data)
        if target.kind == "corpus":
            raise ValueError(f"{args.data} is a text corpus: eval scores questions (use the card's weights section, or a study)")
        title = f"{model.model_id} on {args.data} ({target.kind} items)"
    else:
        target = _target_for(model, args.forget_frac, args.paraphrase)
        title = f"{model.model_id} on {target.name} ({args.paraphrase} templates)"
    splits = [s for s in (args.split or ["forget", "retain", "holdout"]) if target.split(s)]
    result = behavior(model, target, splits=splits, aggregate=args.aggregate, method="none")
    if target.kind == "choice":
        from mechunlearn.verify.choice import choice_accuracy

        choice = choice_accuracy({"model": model}, target).frame.drop(columns=["model"])
        result = Result(pd.concat([result.frame, choice[choice["split"].isin(splits)]], ignore_index=True), result.provenance)
    _print_table(result.summary(("split", "metric")), title)
    if args.out:
        print(f"\nwrote {result.to_csv(args.out)}")
    return 0


def _export_tofu(args: argparse.Namespace) -> int:
    from mechunlearn.data import export_tofu
    from mechunlearn.world import World

    if args.name != "bios-tiny":
        raise ValueError(f"export-tofu writes bios-tiny's world; {args.name!r} has none (its data is already yours)")
    target = World(_recipe(args).world).target(forget_frac=args.forget_frac, paraphrase="all")
    folder = export_tofu(target, args.out, per_fact=args.per_fact)
    print(f"wrote {target.name} of bios-tiny's world in TOFU's layout to {folder}/ (forget.json, retain.json, holdout.json)")
    return 0


def _concept_vectors(args: argparse.Namespace) -> int:
    from mechunlearn.locate.concept_vectors import build_concept_file
    from mechunlearn.models.load import load_model
    from mechunlearn.world.concept_defs import concepts_for

    options = {"recipe": _recipe(args)} if args.name.startswith("bios-tiny") else {}
    model = load_model(args.name, **options)
    out = args.out or Path(__file__).resolve().parent.parent / "concept_vectors" / f"{model.model_id}.json"
    start = time.perf_counter()
    from mechunlearn.locate.concept_vectors import ConceptFileConfig, ValidateConfig

    # bios-tiny stores each concept redundantly: noise of 5x a vector's RMS (the ratio of the
    # paper's sigma on LLaMA-2-7B) changes no answer, so its concepts are validated at 100x.
    sigma = args.sigma if args.sigma is not None else (WORLD_SIGMA if model.meta.get("world_config") else ValidateConfig.sigma)
    located = build_concept_file(model, concepts_for(model), out, ConceptFileConfig(validate=ValidateConfig(sigma=sigma)))
    rejected = located.meta.get("rejected", [])
    print(f"{model.model_id}: {len(located)} concepts located and validated, {len(rejected)} rejected, in {time.perf_counter() - start:.0f} s")
    for record in rejected:
        print(f"  rejected {record}")
    print(f"wrote {out}")
    return 0


def _study_run(args: argparse.Namespace) -> int:
    from mechunlearn.study import load_study, run_study, summary_table, write_report
    from mechunlearn.study.report import load_results

    study = load_study(args.file)
    out = Path(args.out or Path("reports") / study.name)
    start = time.perf_counter()
    try:
        summary = run_study(study, out, executor=args.executor, workers=args.workers, address=args.address, threads=args.threads)
    except KeyboardInterrupt:
        print(f"\ninterrupted: every finished run is saved in {out / 'results'}; run the same command again to continue", file=sys.stderr)
        return 130
    report = write_report(out)
    _print_table(summary_table(load_results(out)), f"study {study.name}")
    print(
        f"\n{summary.total} runs: {summary.skipped} already done, {summary.ok} finished, {summary.failed} failed "
        f"in {time.perf_counter() - start:.0f} s\nwrote {summary.results} and {report}"
    )
    return 1 if summary.failed else 0


def _study_report(args: argparse.Namespace) -> int:
    from mechunlearn.study import write_report

    path = write_report(args.dir)
    print(f"wrote {path}")
    if args.check:
        from mechunlearn.study.browser import check_page

        check = check_page(path)
        print(f"Chromium: {check.rendered}/{check.plots} figures drawn, {len(check.js_errors)} JS errors, {len(check.external_requests)} external requests")
        for line in check.js_errors + check.external_requests:
            print(f"  {line}", file=sys.stderr)
        return 0 if check.ok else 1
    return 0


def _study_compact(args: argparse.Namespace) -> int:
    from mechunlearn.study.store import ResultStore

    store = ResultStore(args.dir)
    before = len(store.files()) + int(store.legacy.exists())
    if not store.runs():
        raise FileNotFoundError(f"no results in {args.dir}; nothing to compact")
    merged = store.compact()
    print(f"{len(store.runs())} runs: {before} files merged into {merged}" if merged else f"{len(store.runs())} runs already in one file: {store.files()[0]}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    """Run studies/default.yaml (on the shipped bios-tiny and its retain model) into ``--out``."""
    study = Path(__file__).resolve().parent.parent / "studies" / "default.yaml"
    if not study.exists():
        raise FileNotFoundError(f"{study} is missing: the demo runs the default study of a source checkout")
    return _study_run(argparse.Namespace(file=study, out=args.out, executor=None, workers=args.workers, address=None, threads=None))


def parser() -> argparse.ArgumentParser:
    """The argument parser (also used to render ``--help``)."""
    p = argparse.ArgumentParser(prog="mechunlearn", description="Mechanistic and parametric analysis of unlearning: removed vs hidden knowledge.")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build-model", help="train and cache a built-in model (bios-tiny) or check that one loads")
    b.add_argument("name", help="bios-tiny, smollm2-135m, gemma-3-270m, a local Hugging Face model directory or a .gguf file")
    b.add_argument("--retain", type=float, default=None, metavar="FRAC", help="build the retain model of this forget fraction (0.1, 0.05, 0.01): the same recipe without the forget people")
    b.add_argument("--rebuild", action="store_true", help="train from the recipe and check the gates even where shipped reference weights or a cached build exist (load_model keeps using the shipped weights; source='build' loads this one)")
    b.add_argument("--write-reference", action="store_true", help="(maintainers) train and write the shipped reference into mechunlearn/models/reference/")
    b.add_argument("--quick", action="store_true", help="use the small 40-person world (builds in about a minute; for trying things out and tests)")
    b.set_defaults(func=_build)

    e = sub.add_parser("eval", help="behavioural evaluation (exact match, answer log-prob, normalised prob) per split")
    e.add_argument("name", help="bios-tiny or bios-tiny-retain10 (5, 1); with --data any model: smollm2-135m, a Hugging Face folder, a .gguf file")
    e.add_argument("--data", type=Path, default=None, help="a data file or folder (QA table, TOFU layout, multiple choice; README 'Your data') instead of the built-in world")
    e.add_argument("--split", action="append", choices=["forget", "retain", "holdout"], help="split to evaluate (repeatable; default all three)")
    e.add_argument("--forget-frac", type=float, default=0.1, choices=FORGET_FRACS, help="forget split: 10%%, 5%% or 1%% of the people (default 0.1)")
    e.add_argument("--paraphrase", default="trained", choices=["trained", "heldout", "all"], help="question templates seen in training, held out, or both")
    e.add_argument("--aggregate", default="split", choices=["split", "item"], help="one row per split and metric, or per item")
    e.add_argument("--out", type=Path, help="write the long-format table to this CSV (atomically, with a provenance sidecar)")
    e.add_argument("--quick", action="store_true", help="evaluate the small 40-person-world build (see build-model --quick)")
    e.set_defaults(func=_eval)

    x = sub.add_parser("export-tofu", help="write bios-tiny's world (a forget split) in TOFU's layout: forget.json, retain.json, holdout.json")
    x.add_argument("name", help="bios-tiny (the world of its recipe)")
    x.add_argument("out", type=Path, help="output folder")
    x.add_argument("--forget-frac", type=float, default=0.1, choices=FORGET_FRACS, help="forget split (default 0.1)")
    x.add_argument("--per-fact", type=int, default=None, help="trained questions per fact (default all; each with its paired held-out question)")
    x.add_argument("--quick", action="store_true", help="the small 40-person-world build")
    x.set_defaults(func=_export_tofu)

    d = sub.add_parser("demo", help="run studies/default.yaml on the shipped bios-tiny and its retain model: results/ (one Parquet file per run) and index.html")
    d.add_argument("--out", default="reports/default", help="output folder (default reports/default)")
    d.add_argument("--workers", type=int, default=None, help="runs at once, each in its own worker process with one torch thread (default: one run at a time in this process)")
    d.set_defaults(func=_demo)

    c = sub.add_parser(
        "concept-vectors",
        help="locate and validate concept vectors for a model and write concept_vectors/<model>.json (deterministic)",
    )
    c.add_argument("name", help="bios-tiny (concepts from its world), smollm2-135m or gemma-3-270m (hand-written concepts)")
    c.add_argument("--out", type=Path, default=None, help="output file (default concept_vectors/<model id>.json in the checkout)")
    c.add_argument("--quick", action="store_true", help="use the small 40-person-world build of bios-tiny")
    c.add_argument("--sigma", type=float, default=None, help=f"validation noise in units of the vector's RMS entry (default 5; {WORLD_SIGMA:g} for bios-tiny)")
    c.set_defaults(func=_concept_vectors)

    st = sub.add_parser("study", help="scripted ablation studies: run a study file, write its report")
    st_sub = st.add_subparsers(dest="study_command", required=True)
    r = st_sub.add_parser("run", help="run every unfinished run of a study file (resumable) and write the report")
    r.add_argument("file", type=Path, help="the study file (YAML), e.g. studies/smoke.yaml")
    r.add_argument("--out", type=Path, help="study folder (default reports/<study name>)")
    r.add_argument("--executor", choices=["local", "ray"], default=None, help="run on this machine, or on a Ray cluster (default: the study's executor: key, else local)")
    r.add_argument("--workers", type=int, default=None, help="runs at once: worker processes (local) or Ray actors, one torch thread each (default: the study's, else 1, in this process)")
    r.add_argument("--address", default=None, help="Ray cluster address (default $RAY_ADDRESS, else a local Ray instance)")
    r.add_argument("--threads", type=int, default=None, help="torch threads per run (default: torch's in this process; 1 per worker process or Ray actor)")
    r.set_defaults(func=_study_run)
    rep = st_sub.add_parser("report", help="(re)write DIR/index.html from a study folder")
    rep.add_argument("dir", type=Path, help="the study folder (holds results/ and study.json)")
    rep.add_argument("--check", action="store_true", help="open the report in headless Chromium: fail on JS errors or undrawn figures")
    rep.set_defaults(func=_study_report)
    com = st_sub.add_parser("compact", help="merge DIR/results/ (one file per run) into one file, atomically (the table reads the same)")
    com.add_argument("dir", type=Path, help="the study folder")
    com.set_defaults(func=_study_compact)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, KeyError, FileNotFoundError, ModuleNotFoundError) as err:
        print(f"mechunlearn: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
