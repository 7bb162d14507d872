"""GPU check: the workbench end to end on smollm2-135m on CUDA (run it wherever a CUDA GPU is).

Not a benchmark of the suite (it has no ``run``): a script that exercises the hot paths on the
device and fails loudly where a tensor is on the wrong one. It loads smollm2-135m on CUDA,
scans concept vectors, builds SalUn / WAGLE / SNIP / magnitude / random masks, unlearns under
a 1% mask (bf16 autocast where the GPU supports it) and densely with NPO, trains a small SAE,
runs LUNAR, and scores the evaluation card (behaviour, probes, weights, activations, attacks,
MIA) on the masked edit; then compares the edit's behaviour numbers with the same edit on the
CPU. Prints the timings and writes ``$OUT/gpu_check.json`` if ``OUT`` is set.

    python -m benchmarks.gpu_check [--device cuda] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch


def _timed(rows: list, what: str, fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    rows.append({"step": what, "seconds": round(time.perf_counter() - start, 3)})
    print(f"{what:<44} {rows[-1]['seconds']:8.2f} s", flush=True)
    return out


def check(device: str = "cuda", quick: bool = False) -> dict:
    """Run every stage on ``device``; returns timings and the behaviour numbers."""
    from mechunlearn.core.edit import DeltaEdit
    from mechunlearn.core.selection import MaskSelection
    from mechunlearn.locate.concept_vectors import ScanConfig, scan
    from mechunlearn.locate.lunar import LunarConfig, lunar
    from mechunlearn.locate.saliency import MagnitudeScore, RandomScore, SalUnSaliency, SnipScore, WagleAttribution
    from mechunlearn.locate.sae import SAETrainConfig, train_sae
    from mechunlearn.models import load_model
    from mechunlearn.models.text import reference_ids
    from mechunlearn.unlearn import UnlearnConfig, unlearn
    from mechunlearn.verify.behavior import behavior
    from mechunlearn.verify.card import CardConfig, evaluation_card
    from mechunlearn.world.concepts import ConceptSet, concept_file

    rows: list[dict] = []
    model = _timed(rows, f"load smollm2-135m on {device}", lambda: load_model("smollm2-135m", device=device))
    assert model.device.type == torch.device(device).type, model.device
    concepts = ConceptSet.load(concept_file("smollm2-135m"), model=model)
    target = concepts["Japan"].target()
    refs = {c.name: reference_ids(model, c.reference_words) for c in list(concepts)[:8]}
    _timed(rows, "concept scan (8 concepts, all layers)", lambda: scan(model, refs, ScanConfig(), progress=False))
    scorers = {"salun": SalUnSaliency(), "wagle": WagleAttribution(retain_items=32), "snip": SnipScore(), "magnitude": MagnitudeScore(), "random": RandomScore()}
    masks = {}
    for name, scorer in scorers.items():
        masks[name] = _timed(rows, f"{name} scores + 1% mask", lambda scorer=scorer: scorer.locate(model, target, progress=False).frac(0.01))
    cfg = UnlearnConfig(loss="ga", steps=10 if quick else 30, lr=1e-5, batch_size=8, stop_forget_em=None)
    edit = _timed(rows, "GA under the SalUn 1% mask", lambda: unlearn(model, target, cfg, mask=masks["salun"]))
    _timed(rows, "dense NPO", lambda: unlearn(model, target, UnlearnConfig(loss="npo", steps=10, lr=1e-5, batch_size=8, stop_forget_em=None)))
    texts = [t for c in concepts for t in c.texts]
    _timed(rows, "SAE (512 latents)", lambda: train_sae(model, texts, SAETrainConfig(hook="blocks.10.hook_resid_post", d_sae=512, k=16, steps=50, batch_size=256), progress=False))
    _timed(rows, "LUNAR", lambda: lunar(model, target, LunarConfig(), progress=False))
    card_cfg = CardConfig(sections=("behavior", "probes", "weights", "activations", "attacks", "mia"), max_items=64)
    card = _timed(rows, "evaluation card on the masked GA edit", lambda: evaluation_card((model, edit), None, None, target, card_cfg))
    with edit.applied(model):
        on_device = behavior(model, target).summary(("split", "metric"))
    cpu_model = load_model("smollm2-135m")
    cpu_mask = MaskSelection({n: s.cpu() for n, s in edit.mask.scores.items()}, {n: m.cpu() for n, m in edit.mask.masks.items()})
    cpu_edit = DeltaEdit({n: d.cpu() for n, d in edit.deltas.items()}, cpu_mask, label=edit.label)
    with cpu_edit.applied(cpu_model):
        on_cpu = behavior(cpu_model, target).summary(("split", "metric"))
    gap = float((on_device["answer_logprob"] - on_cpu["answer_logprob"]).abs().max())
    print(f"behaviour of the edit, {device} vs cpu: max |Δ answer log-prob| = {gap:.4f}")
    result = {"device": device, "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None, "rows": rows,
              "card_rows": len(card.frame), "behaviour_device": on_device.to_dict(), "behaviour_cpu": on_cpu.to_dict(), "max_logprob_gap": gap}
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "gpu_check.json"), "w") as fh:
            json.dump(result, fh, indent=2, default=str)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description="the workbench end to end on smollm2-135m on a GPU")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run this where a GPU is")
    result = check(args.device, args.quick)
    return 0 if result["max_logprob_gap"] < 0.05 else 1


if __name__ == "__main__":
    raise SystemExit(main())
