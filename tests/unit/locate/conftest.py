"""Planted models for the localizer tests: a `HookEdit` that makes one layer's MLP (or attention)
look up each person's attribute, so the right answer of a localizer is known."""

from __future__ import annotations

import torch

from mechunlearn.core.edit import HookEdit


def planted_lookup(model, items, layer: int, *, component: str = "mlp", directions: str = "random", strength: float = 30.0, seed: int = 1):
    """A `HookEdit` adding, at ``blocks.{layer}.hook_{component}_out``, a direction for each
    item's answer wherever the token embedding is that person's last-name token (read from
    ``blocks.0.hook_resid_pre`` minus the position embedding, so noise added to the embedding
    hides the person). Before ``layer`` the answer is nowhere in the residual stream.

    ``directions``: ``random`` (orthonormal, one per answer) or ``unembed`` (the answer token's
    unembedding column, so the planted layer also makes the model say the answer)."""
    answers = sorted({it.answer for it in items})
    if directions == "random":
        basis = torch.linalg.qr(torch.randn(model.d_model, len(answers), generator=torch.Generator().manual_seed(seed)))[0].T
    else:
        w_u = model.weight("unembed.W_U").detach()
        cols = w_u[:, [model.encode(a)[0] for a in answers]].T
        basis = cols / cols.norm(dim=-1, keepdim=True)
    w_e = model.weight("embed.W_E").detach()
    answer_of = {int(model.to_tokens(it.subject)[0, -1]): answers.index(it.answer) for it in items}
    tokens = torch.tensor(list(answer_of))
    rows = torch.stack([strength * basis[a] for a in answer_of.values()])
    seen = {}

    def read_position(act, hook):
        seen["pos"] = act

    def read_tokens(act, hook):  # which positions hold which person: [batch, pos, person]
        seen["match"] = ((act - seen["pos"])[:, :, None, :] - w_e[tokens][None, None]).abs().amax(-1) < 1e-5

    def add_answer(act, hook):
        return act + seen["match"].to(act.dtype) @ rows

    return (HookEdit("hook_pos_embed", read_position, label="read")
            + HookEdit("blocks.0.hook_resid_pre", read_tokens, label="read")
            + HookEdit(f"blocks.{layer}.hook_{component}_out", add_answer, label="lookup"))
