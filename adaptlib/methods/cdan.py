"""CDAN and CDAN+E: domain-adversarial training conditioned on the class predictions."""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from .._checks import check_non_negative
from ..losses import conditional_domain_adversarial
from ..models import AdaptModel, DomainDiscriminator
from .base import Batch, Method, Progress, StepOutput, dann_warmup
from .search_space import Choice, HParam, LogUniform

#: Above this ``D * C`` the multilinear map is replaced by the randomized one (the paper's rule).
RANDOMIZE_ABOVE = 4096


class CDAN(Method):
    """Conditional Domain Adversarial Network (Long et al., NeurIPS 2018).

    Algorithm (per step, progress ``p``):

    1. ``f_s, f_t = g(x_s), g(x_t)``; logits ``z_s, z_t`` (one forward pass);
    2. ``classification = CE(z_s, y_s)``;
    3. ``g = softmax(z)`` (detached) and the conditioning ``h = T(f, g)``: the multilinear map
       ``f (x) g`` (``D*C`` values) or, when ``D*C > 4096`` (or ``randomized=True``), the
       randomized map ``(f R_f) . (g R_g) / sqrt(d)`` with fixed Gaussian ``R_f``, ``R_g``;
    4. ``lambda_p = trade_off * (2 / (1 + exp(-gamma p)) - 1)``;
    5. ``domain = BCE(D(R_lambda(h)), d)`` (:func:`adaptlib.losses.conditional_domain_adversarial`);
       with entropy conditioning (CDAN+E) each sample weighs ``1 + exp(-H(g))``, normalised per
       domain, so that uncertain predictions count less.

    The discriminator is DANN's (``hidden_dim`` wide, two hidden layers) on the ``D*C`` (or
    ``d``) conditioning; it minimises ``domain``, the features maximise it through the reversal.
    The random matrices are drawn once in :meth:`setup` from torch's generator (seeded by the
    Trainer) and saved with the method's state.

    Args:
        trade_off: final weight of the reversed domain gradient.
        gamma: steepness of the warm-up (10, DANN's).
        hidden_dim: width of the discriminator's hidden layers.
        dropout: dropout of the discriminator.
        entropy_conditioning: CDAN+E's entropy weights (registered as ``"cdan-e"`` with True).
        randomized: use the randomized map; ``None`` (default): when ``D*C > 4096``.
        randomized_dim: output width ``d`` of the randomized map (1024 in the paper).
        alignment: ``"local"`` (default) or ``"global"`` (``docs/distributed.md``).
    """

    name = "cdan"
    #: Tunable hyper-parameters: default (= the __init__ default) and search distribution.
    search_space = {
        "trade_off": HParam(1.0, LogUniform(0.1, 10.0)),
        "gamma": HParam(10.0, LogUniform(3.0, 30.0)),
        "hidden_dim": HParam(256, Choice((64, 128, 256))),
    }
    default_entropy_conditioning = False

    def __init__(self, trade_off: float = 1.0, gamma: float = 10.0, hidden_dim: int = 256, dropout: float = 0.5,
                 entropy_conditioning: Optional[bool] = None, randomized: Optional[bool] = None,
                 randomized_dim: int = 1024, alignment: str = "local") -> None:
        super().__init__()
        self.set_alignment(alignment)
        self.trade_off = check_non_negative(trade_off, "trade_off")
        self.gamma = float(gamma)
        self.hidden_dim = int(hidden_dim)
        self.dropout = float(dropout)
        self.entropy_conditioning = bool(self.default_entropy_conditioning if entropy_conditioning is None
                                         else entropy_conditioning)
        self.randomized = None if randomized is None else bool(randomized)
        self.randomized_dim = int(randomized_dim)
        if self.randomized_dim < 1:
            raise ValueError(f"randomized_dim must be a positive integer, got {randomized_dim!r}")
        self.discriminator: DomainDiscriminator | None = None
        self.register_buffer("random_features", None)
        self.register_buffer("random_predictions", None)

    def uses_randomized_map(self, model: AdaptModel) -> bool:
        """Whether the randomized map is used for ``model`` (``randomized``, or ``D*C > 4096`` when None)."""
        if self.randomized is not None:
            return self.randomized
        return model.feature_dim * model.num_classes > RANDOMIZE_ABOVE

    def setup(self, model: AdaptModel) -> None:
        d, c = model.feature_dim, model.num_classes
        if self.uses_randomized_map(model):
            self.random_features = torch.randn(d, self.randomized_dim)
            self.random_predictions = torch.randn(c, self.randomized_dim)
            in_dim = self.randomized_dim
        else:
            self.random_features = self.random_predictions = None
            in_dim = d * c
        self.discriminator = DomainDiscriminator(in_dim, self.hidden_dim, dropout=self.dropout)

    def coefficient(self, progress: Progress) -> float:
        """The gradient-reversal coefficient ``lambda_p`` used at ``progress``."""
        return self.trade_off * dann_warmup(progress.fraction, self.gamma)

    def loss_terms(self, model: AdaptModel, batch: Batch, progress: Progress) -> StepOutput:
        if self.discriminator is None:
            raise RuntimeError(f"{type(self).__name__}.setup(model) must be called before training (Trainer does this)")
        src, tgt = self.forward_source_target(model, batch)
        lam = self.coefficient(progress)
        fs, ft, zs, zt = self.gather(src.features, tgt.features, src.logits, tgt.logits)
        random = None
        if self.random_features is not None:
            random = (self.random_features.to(fs.dtype), self.random_predictions.to(fs.dtype))
        domain, accuracy = conditional_domain_adversarial(
            fs, ft, zs, zt, self.discriminator, lam,
            entropy_conditioning=self.entropy_conditioning, random_matrices=random)
        return StepOutput(
            {"classification": self.classification(src.logits, batch.source.y), "domain": domain},
            {"discriminator_accuracy": accuracy, "grl_coefficient": lam},
        )

    def hparams(self) -> Dict[str, Any]:
        return {"trade_off": self.trade_off, "gamma": self.gamma, "hidden_dim": self.hidden_dim,
                "dropout": self.dropout, "entropy_conditioning": self.entropy_conditioning,
                "randomized": self.randomized, "randomized_dim": self.randomized_dim, "alignment": self.alignment}


class CDANE(CDAN):
    """CDAN+E: :class:`CDAN` with entropy conditioning on by default (``entropy_conditioning=True``)."""

    name = "cdan-e"
    default_entropy_conditioning = True
