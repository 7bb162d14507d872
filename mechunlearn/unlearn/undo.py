"""UNDO (Lee et al. 2025, arXiv 2506.06278, "Distillation Robustifies Unlearning"): unlearn, then
distil the unlearned model (the teacher) into a noised copy of itself (the student).

The student starts at the paper's noised interpolation (its "Serum"/UNDO perturbation)

    θ_S⁰ = (1 − α)·θ_T + α·β·N,   N_w ~ 𝒩(0, std(θ_T,w)²) per weight tensor w,

with θ_T the unlearned teacher's weights: α ∈ [0, 1] how far the copy is pushed toward noise,
β the noise scale in units of each tensor's own weight spread (our choice of N: the paper draws
N from the initialisation distribution, which for a trained model we approximate by a zero-mean
Gaussian of the tensor's measured standard deviation). Then the student is trained through the
one loop (`unlearn` with the ``distill`` loss) to match the teacher's next-token distribution on
retain text (``forget_weight`` > 0 adds forget text). The paper's claim: the forgotten
capability does not come back with the noise, so relearning it is slower.

The result is one edit: the teacher's `DeltaEdit` composed with the student's delta (relative to
the teacher), so ``edit.applied(model)`` puts the student's weights in place.

In a study (not in ``studies/default.yaml``: the demo's time budget is tight), e.g.::

    methods:
      - name: undo
        params: {base: npo, alpha: 0.3, beta: 1.0, steps: 200, lr: 1.0e-3}
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch

from mechunlearn.core.edit import Compose
from mechunlearn.unlearn.unlearner import UnlearnConfig, unlearn

if TYPE_CHECKING:
    from mechunlearn.models.model import Model
    from mechunlearn.world.target import Target


@dataclass(frozen=True)
class UndoConfig:
    """The two stages of UNDO: the unlearning run (the teacher) and the distillation run."""

    unlearn: UnlearnConfig = field(default_factory=lambda: UnlearnConfig(loss="npo"))
    """The unlearning method whose result is the teacher (any registered loss)."""
    alpha: float = 0.3
    """α: interpolation toward noise (0: the student is the teacher; 1: pure noise)."""
    beta: float = 1.0
    """β: noise scale, in units of each weight tensor's standard deviation."""
    steps: int = 200
    """Distillation steps."""
    lr: float = 1e-3
    """Distillation learning rate."""
    batch_size: int = 32
    """Distillation batch (retain items, and as many forget items if ``forget_weight`` > 0)."""
    forget_weight: float = 0.0
    """Weight of the KL on forget text (0: distil on retain text only, as in the paper)."""
    data: str = "both"
    """What distillation reads: ``items``, ``texts`` or ``both`` (see `UnlearnConfig.data`)."""
    weights: str | tuple[str, ...] = "no_embed"
    """The weights that are noised and distilled."""
    seed: int = 0
    """Seed of the noise and of the distillation loop."""

    def __post_init__(self) -> None:
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        self.distill_config()

    def distill_config(self) -> UnlearnConfig:
        return UnlearnConfig(
            loss="distill", loss_options={"forget_weight": self.forget_weight, "retain_weight": 1.0}, data=self.data,
            weights=self.weights, steps=self.steps, lr=self.lr, batch_size=self.batch_size, stop_forget_em=None,
            seed=self.seed, autocast=self.unlearn.autocast,
        )


def noised_copy(weights: dict[str, torch.Tensor], alpha: float, beta: float, seed: int) -> dict[str, torch.Tensor]:
    """(1 − α)·θ + α·β·N per tensor, N ~ 𝒩(0, std(θ)²) drawn from a seeded generator (CPU, then
    moved to each tensor's device, so the draw does not depend on the device)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name in sorted(weights):
        theta = weights[name]
        noise = torch.randn(theta.shape, generator=gen, dtype=torch.float32).to(theta.device, theta.dtype)
        out[name] = (1 - alpha) * theta + alpha * beta * theta.float().std().to(theta.dtype) * noise
    return out


def undo(model: "Model", target: "Target", config: UndoConfig = UndoConfig()) -> Compose:
    """Unlearn (``config.unlearn``), then distil the unlearned teacher into its noised copy.

    Returns ``Compose([teacher, student])``: the teacher's `DeltaEdit`, then the student's
    delta relative to it (meta: ``alpha``, ``beta``, both stages' losses). The model is left as
    it was found."""
    teacher = unlearn(model, target, config.unlearn)

    def start(m: "Model", originals: dict[str, torch.Tensor]) -> None:
        m.set_weights(noised_copy(originals, config.alpha, config.beta, config.seed))

    with teacher.applied(model):
        student = unlearn(model, target, config.distill_config(), init=start)
    student = replace(student, label="undo-distill", meta={**student.meta, "alpha": config.alpha, "beta": config.beta})
    return Compose([teacher, student])
