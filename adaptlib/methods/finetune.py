"""Fine-tuning on a few labelled target samples, with optional frozen backbone or L2-SP."""
from __future__ import annotations

from typing import Any, Dict, Tuple

import torch

from ..models import AdaptModel
from .base import Batch, Method, Progress, StepOutput
from .search_space import HParam, Choice, Uniform


class FineTune(Method):
    """Supervised fine-tuning: train on the source, then on the few labelled target samples.

    Phase 1 (progress ``p < source_fraction``): ``CE(h(g(x_s)), y_s)``.
    Phase 2: ``CE(h(g(x_t^l)), y_t^l) + (l2sp / 2) ||w - w_0||^2`` on the labelled target
    samples, where ``w`` are the backbone weights and ``w_0`` their values at the end of
    phase 1 (L2-SP, Li, Grandvalet & Davoine, ICML 2018; ``l2sp = 0`` disables it). With
    ``freeze_backbone`` the backbone is frozen in phase 2 (only the bottleneck and head
    adapt), the classic "linear probe" variant: it runs without gradient and, through
    :meth:`frozen_modules`, in eval mode, so its parameters and buffers (batch-norm running
    statistics) stay exactly those of the end of phase 1.

    This method uses target labels; its accuracy is reported on the target samples that were
    not used for training and is marked as such in every table.

    The anchor ``w_0`` is the registered buffer ``anchor`` (the backbone weights flattened
    and concatenated, float, ``(P,)``; empty ``(0,)`` until the phase switch), so it is part of
    ``state_dict()`` and survives a checkpoint: a run resumed after the switch keeps the
    weights of the switch, not those of the resume.

    Args:
        source_fraction: share of the step budget spent on the source phase, in ``[0, 1)``.
        freeze_backbone: freeze the backbone during phase 2.
        l2sp: weight ``alpha`` of the L2-SP penalty toward the source weights.
    """

    #: The objective in the paper's notation and in adaptlib's: loss terms and the mini-batch
    #: estimator (rendered at the top of the method's docs page; see ``Method.objective``).
    objective = r"""
    **Paper** (L2-SP: Li, Grandvalet & Davoine, ICML 2018, Sec. 3). Fine-tune the weights :math:`w`
    of a network pre-trained to :math:`w^0` on the labelled data of the new task, with the penalty

    .. math::
        \begin{aligned}
        &\min_w\ J(w) + \Omega(w), \\
        &\Omega(w) = \frac{\alpha}{2} \big\lVert w_{\mathcal S} - w^0_{\mathcal S} \big\rVert_2^2
        + \frac{\beta}{2} \big\lVert w_{\bar{\mathcal S}} \big\rVert_2^2,
        \end{aligned}

    :math:`J` the empirical risk, :math:`w_{\mathcal S}` the layers shared with the pre-trained
    network and :math:`w_{\bar{\mathcal S}}` the new ones.

    **In adaptlib.** Two stages in one run, switched at the progress :math:`\rho` =
    ``source_fraction``; with :math:`N` source rows and a batch of :math:`K` of the few labelled
    target samples :math:`(x^l_k, y^l_k)`:

    .. math::
        \begin{aligned}
        p < \rho:\ & \frac1N \sum_{i=1}^{N} \mathrm{CE}\big(h(g(x^s_i)), y^s_i\big), \\
        p \ge \rho:\ & \frac1K \sum_{k=1}^{K} \mathrm{CE}\big(h(g(x^l_k)), y^l_k\big) \\
        & + \frac{\alpha}{2} \lVert w - w_0 \rVert_2^2.
        \end{aligned}

    * ``classification``: the first line (source stage);
    * ``target_classification``: the mean cross-entropy of the labelled target batch;
    * ``l2sp``: the penalty, :math:`\alpha` = ``l2sp`` (returned only when ``l2sp > 0``), :math:`w`
      the backbone's weights and :math:`w_0` their values at the switch.

    Estimator: each cross-entropy is the mean over its mini-batch (an unbiased estimate of that
    risk); the penalty is exact. Differences from L2-SP: the "pre-trained" weights are those that
    the source stage ends with; only the backbone is anchored (the bottleneck and head adapt
    freely); there is no :math:`\beta` term. ``freeze_backbone=True`` instead freezes the backbone
    in the second stage (a linear probe on its features).
    """

    name = "finetune"
    #: Tunable hyper-parameters: default (= the __init__ default) and search distribution.
    search_space = {
        "source_fraction": HParam(0.5, Uniform(0.3, 0.8)),
        "l2sp": HParam(0.0, Choice((0.0, 0.001, 0.01, 0.1))),
    }
    uses_target = False
    uses_target_labels = True

    def __init__(self, source_fraction: float = 0.5, freeze_backbone: bool = False, l2sp: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= float(source_fraction) < 1.0:
            raise ValueError(f"source_fraction must be in [0, 1), got {source_fraction!r}")
        if float(l2sp) < 0:
            raise ValueError(f"l2sp must be non-negative, got {l2sp!r}")
        if freeze_backbone and l2sp > 0:
            raise ValueError("l2sp has no effect with freeze_backbone=True: choose one")
        self.source_fraction = float(source_fraction)
        self.freeze_backbone = bool(freeze_backbone)
        self.l2sp = float(l2sp)
        self.register_buffer("anchor", torch.empty(0))

    def setup(self, model: AdaptModel) -> None:
        self.anchor = torch.empty(0)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        # The anchor's size is 0 before the phase switch and P after: take the saved one's.
        saved = state_dict.get(prefix + "anchor")
        if isinstance(saved, torch.Tensor):
            self.anchor = torch.empty(saved.shape, dtype=saved.dtype, device=self.anchor.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def in_target_phase(self, progress: Progress) -> bool:
        return progress.fraction >= self.source_fraction

    def frozen_modules(self, model: AdaptModel, progress: Progress) -> Tuple[torch.nn.Module, ...]:
        """``(model.backbone,)`` in phase 2 with ``freeze_backbone``, else ``()``."""
        return (model.backbone,) if self.freeze_backbone and self.in_target_phase(progress) else ()

    def on_step_start(self, model: AdaptModel, progress: Progress) -> None:
        if self.l2sp > 0 and self.in_target_phase(progress) and self.anchor.numel() == 0:
            self.anchor = torch.cat([p.detach().reshape(-1) for p in model.backbone_parameters()]).clone()

    def loss_terms(self, model: AdaptModel, batch: Batch, progress: Progress) -> StepOutput:
        if not self.in_target_phase(progress):
            logits = model(batch.source.x).logits
            return StepOutput({"classification": self.classification(logits, batch.source.y)})
        if batch.target_labeled is None:
            raise ValueError("FineTune needs labelled target samples: pass target_labeled to Trainer.fit")
        x, y = batch.target_labeled.x, batch.target_labeled.y
        if self.freeze_backbone:
            with torch.no_grad():
                h = model.backbone(x)
            logits = model.head(model.bottleneck(h))
        else:
            logits = model(x).logits
        losses = {"target_classification": self.classification(logits, y)}
        if self.l2sp > 0:
            if self.anchor.numel() == 0:  # phase 2 reached without the hook
                raise RuntimeError("L2-SP anchor weights are missing: on_step_start was not called")
            params = list(model.backbone_parameters())
            if sum(p.numel() for p in params) != self.anchor.numel():
                raise RuntimeError(f"the L2-SP anchor has {self.anchor.numel()} values but the backbone "
                                   f"{sum(p.numel() for p in params)}: it was taken from another model")
            anchors = self.anchor.split([p.numel() for p in params])
            penalty = sum(((p - p0.view_as(p)) ** 2).sum() for p, p0 in zip(params, anchors))
            losses["l2sp"] = 0.5 * self.l2sp * penalty
        return StepOutput(losses)

    def hparams(self) -> Dict[str, Any]:
        return {"source_fraction": self.source_fraction, "freeze_backbone": self.freeze_backbone, "l2sp": self.l2sp}
