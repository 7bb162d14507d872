"""UNDO on the small bios-tiny: the student starts at the noised interpolation of the unlearned
teacher, distillation lowers its KL to the teacher, and the forget set stays forgotten."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mechunlearn.models.bios_tiny import BiosTinyRecipe
from mechunlearn.models.text import encode_qa
from mechunlearn.unlearn import UnlearnConfig, unlearn
from mechunlearn.unlearn.undo import UndoConfig, undo
from mechunlearn.verify.behavior import score_items
from mechunlearn.world import World

pytestmark = pytest.mark.slow

ALPHA, BETA = 0.3, 1.0
DISTILL_STEPS, DISTILL_BATCH = 100, 16  # half the default batch: steps cost half, and 100 of them halve the KL


@pytest.fixture(scope="module")
def target():
    return World(BiosTinyRecipe().small().world).target(0.1, paraphrase="trained")


@torch.no_grad()
def _retain_kl_edit(model, teacher, edit, target) -> float:
    """Mean token KL(teacher ‖ model under ``edit``) on retain questions and answers."""
    items = list(target.retain)[:128]
    batch = encode_qa(model, [i.prompt for i in items], [i.answer for i in items])
    with teacher.applied(model):
        t = F.log_softmax(model.forward(batch.tokens).float(), -1)
    with edit.applied(model):
        s = F.log_softmax(model.forward(batch.tokens).float(), -1)
    kl = (t.exp() * (t - s)).sum(-1)
    mask = batch.attention_mask.to(kl.device).float()
    return float((kl * mask).sum() / mask.sum())


def test_undo_starts_noised_distils_and_stays_forgotten(small_bios_tiny, target):
    model, _ = small_bios_tiny
    before = {n: model.weight(n).detach().clone() for n in model.weight_names()}
    # the early stop reads 200 forget questions every 5 steps (the teacher runs three times here)
    base = UnlearnConfig(loss="graddiff", steps=60, lr=1e-3, stop_forget_em=0.0, stop_every=5, stop_items=200, autocast="float32")
    teacher_only = unlearn(model, target, base)
    # one step at a negligible rate: the student's weights are its starting point
    start = undo(model, target, UndoConfig(unlearn=base, alpha=ALPHA, beta=BETA, steps=1, lr=1e-12, seed=5))
    teacher, student = start.edits
    names = list(student.deltas)
    assert names == model.weight_names("no_embed")
    with teacher.applied(model):
        theta_t = {n: model.weight(n).detach().clone() for n in names}
    # the same teacher as a plain run (the loop is seeded): UNDO's first stage is the base method
    assert all(torch.allclose(teacher.deltas[n], teacher_only.deltas[n]) for n in names)
    with start.applied(model):
        for n in names:
            theta_s = model.weight(n).detach()
            noise = (theta_s - (1 - ALPHA) * theta_t[n]) / (ALPHA * BETA)
            assert noise.std().item() == pytest.approx(theta_t[n].std().item(), rel=0.15), n
            if theta_t[n].numel() > 1000:
                corr = torch.corrcoef(torch.stack([noise.flatten(), theta_t[n].flatten()]))[0, 1].item()
                assert abs(corr) < 0.1, n
    kl_start = _retain_kl_edit(model, teacher, start, target)

    trained = undo(model, target, UndoConfig(unlearn=base, alpha=ALPHA, beta=BETA, steps=DISTILL_STEPS, batch_size=DISTILL_BATCH, lr=1e-3, seed=5))
    kl_end = _retain_kl_edit(model, trained.edits[0], trained, target)
    assert kl_end < 0.5 * kl_start, (kl_start, kl_end)

    forget = list(target.forget)[:200]
    retain = list(target.retain)[:200]
    with trained.applied(model):
        forget_em = score_items(model, forget, progress=False)["exact_match"].mean()
        retain_em = score_items(model, retain, progress=False)["exact_match"].mean()
    with teacher.applied(model):
        teacher_retain = score_items(model, retain, progress=False)["exact_match"].mean()
    assert forget_em <= 0.1, forget_em
    assert retain_em >= teacher_retain - 0.25, (retain_em, teacher_retain)
    assert all(torch.equal(model.weight(n), before[n]) for n in before)  # left as found

