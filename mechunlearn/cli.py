"""The ``mechunlearn`` command.

    mechunlearn build-model bios-tiny [--retain 0.1] [--rebuild]
    mechunlearn eval bios-tiny [--split forget --split retain] [--forget-frac 0.1] [--out table.csv]
    mechunlearn demo [--out reports/default]
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


def _print_table(frame: pd.DataFrame, title: str) -> None:
    with pd.option_context("display.width", 120, "display.max_columns", 20, "display.float_format", "{:.3f}".format):
        print(f"\n{title}\n{frame.to_string()}")


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
        bios_tiny.load(retain_for=args.retain, rebuild=args.rebuild)
    except bios_tiny.GateError as err:
        _print_table(err.gates, "gates (FAILED, nothing saved)")
        print(str(err), file=sys.stderr)
        return 1
    gates = bios_tiny.gates_of(retain_for=args.retain)
    _print_table(gates, f"{bios_tiny.model_id(args.retain)} gates (ready in {time.perf_counter() - start:.1f} s)")
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
    from mechunlearn.models.load import load_model
    from mechunlearn.verify.behavior import behavior

    model = load_model(args.name)
    target = _target_for(model, args.forget_frac, args.paraphrase)
    splits = args.split or ["forget", "retain", "holdout"]
    result = behavior(model, target, splits=splits, aggregate=args.aggregate, method="none")
    _print_table(result.summary(("split", "metric")), f"{model.model_id} on {target.name} ({args.paraphrase} templates)")
    if args.out:
        print(f"\nwrote {result.to_csv(args.out)}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    """Until the study runner lands: build bios-tiny and its retain model, print the gates, and
    write the evaluation table of both models on the 10% forget split."""
    from mechunlearn.core.result import Result
    from mechunlearn.models import bios_tiny
    from mechunlearn.verify.behavior import behavior

    out = Path(args.out)
    start = time.perf_counter()
    results, gate_frames = [], []
    for retain_for in (None, 0.1):
        model = bios_tiny.load(retain_for=retain_for)
        gates = bios_tiny.gates_of(retain_for=retain_for).assign(model=model.model_id)
        gate_frames.append(gates)
        for paraphrase in ("trained", "heldout"):
            target = _target_for(model, 0.1, paraphrase)
            res = behavior(model, target, method=model.model_id)
            res.frame["paraphrase"] = paraphrase
            results.append(res)
    gates = pd.concat(gate_frames, ignore_index=True)
    _print_table(gates.set_index(["model", "gate"]), "gates")
    table = Result.concat(results)
    _print_table(table.summary(("method", "paraphrase", "split", "metric")), "evaluation on the 10% forget split")
    path = table.to_csv(out / "evaluation.csv")
    gates.to_csv(out / "gates.csv", index=False)
    print(f"\nwrote {path} and {out / 'gates.csv'} in {time.perf_counter() - start:.0f} s")
    return 0


def parser() -> argparse.ArgumentParser:
    """The argument parser (also used to render ``--help``)."""
    p = argparse.ArgumentParser(prog="mechunlearn", description="Mechanistic and parametric analysis of unlearning: removed vs hidden knowledge.")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build-model", help="train and cache a built-in model (bios-tiny) or check that one loads")
    b.add_argument("name", help="bios-tiny, smollm2-135m, or a local Hugging Face model directory")
    b.add_argument("--retain", type=float, default=None, metavar="FRAC", help="build the retain model of this forget fraction (0.1, 0.05, 0.01): the same recipe without the forget people")
    b.add_argument("--rebuild", action="store_true", help="retrain even if a cached build exists")
    b.set_defaults(func=_build)

    e = sub.add_parser("eval", help="behavioural evaluation (exact match, answer log-prob, normalised prob) per split")
    e.add_argument("name", help="bios-tiny or bios-tiny-retain10 (5, 1)")
    e.add_argument("--split", action="append", choices=["forget", "retain", "holdout"], help="split to evaluate (repeatable; default all three)")
    e.add_argument("--forget-frac", type=float, default=0.1, choices=FORGET_FRACS, help="forget split: 10%%, 5%% or 1%% of the people (default 0.1)")
    e.add_argument("--paraphrase", default="trained", choices=["trained", "heldout", "all"], help="question templates seen in training, held out, or both")
    e.add_argument("--aggregate", default="split", choices=["split", "item"], help="one row per split and metric, or per item")
    e.add_argument("--out", type=Path, help="write the long-format table to this CSV (atomically, with a provenance sidecar)")
    e.set_defaults(func=_eval)

    d = sub.add_parser("demo", help="build bios-tiny and its retain model, print the gates, write the evaluation table")
    d.add_argument("--out", default="reports/default", help="output folder (default reports/default)")
    d.set_defaults(func=_demo)
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
