"""Domain-alignment losses.

Functional losses (tensors in, scalar tensor or result dataclass out) and thin
``nn.Module`` wrappers:

* :func:`mmd`, :func:`jmmd`, :func:`gaussian_bandwidths`: multi-kernel MMD² (DAN) and joint
  MMD² (JAN).
* :func:`coral`: Deep CORAL.
* :func:`sinkhorn` / :class:`SinkhornResult`, :func:`sinkhorn_divergence`: entropic OT and
  its debiased divergence; :func:`sinkhorn_plan` recomputes the transport plan (or a block of
  it) from the potentials when the tiled or Triton path did not form it.
* :func:`jdot` / :class:`JDOTResult`: DeepJDOT joint feature/label OT loss.
* :func:`gradient_reversal`, :func:`domain_adversarial`, :func:`entropy`: DANN building
  blocks and the entropy regulariser.
* :func:`multilinear_map`, :func:`randomized_multilinear_map`, :func:`cdan_entropy_weights`,
  :func:`conditional_domain_adversarial`: CDAN's conditioning and loss.
* :func:`margin_disparity_discrepancy`: MDD's objective between a classifier and its
  adversarial head.
* :func:`minimum_class_confusion` (MCC), :func:`batch_nuclear_norm` (BNM): losses on the
  matrix of a batch's predictions.
* :func:`adaptive_feature_norm` (SAFN), :func:`hard_feature_norm` (HAFN): feature-norm losses.
* :func:`classifier_discrepancy`: MCD's L1 distance between two classifiers' predictions.
* :func:`information_maximization`, :func:`cluster_pseudo_labels`: SHOT's source-free terms.

All functions validate their inputs (errors name the offending argument), work in float32
and float64 on the inputs' device, and floor every data-derived scale so that identical or
constant inputs never produce NaN. MMD, JMMD, CORAL and Sinkhorn also accept float16 and
bfloat16 inputs (e.g. under ``torch.autocast``): they compute and return float32, and the
gradients come back in the input dtype. JDOT rejects half precision with a ``TypeError``
(the DeepJDOT method casts to float32 under autocast); :func:`domain_adversarial` (CDAN's
loss too) and :func:`entropy` compute half-precision logits in float32;
:func:`gradient_reversal` and the CDAN maps compute in the input dtype; MCC, BNM, the
feature norms, MDD, MCD's discrepancy and SHOT's terms compute half precision in float32
(float32 and float64 in their own dtype). ``scripts/fuzz_losses.py`` fuzzes all of them.

``mmd``, ``jmmd``, ``sinkhorn`` and ``sinkhorn_divergence`` run along one of three
computation paths (``path="dense"``, ``"tiled"`` or ``"triton"``; ``"auto"`` by default),
described in :mod:`adaptlib.kernels`.
"""
from .adversarial import domain_adversarial, entropy, gradient_reversal
from .conditional import (cdan_entropy_weights, conditional_domain_adversarial, multilinear_map,
                          randomized_multilinear_map)
from .confusion import batch_nuclear_norm, minimum_class_confusion
from .feature_norm import adaptive_feature_norm, hard_feature_norm
from .mdd import margin_disparity_discrepancy
from .coral import coral
from .discrepancy import classifier_discrepancy
from .information import cluster_pseudo_labels, information_maximization
from .jdot import JDOTResult, jdot
from .mmd import gaussian_bandwidths, jmmd, mmd
from .modules import CORALLoss, GradientReversal, JMMDLoss, MMDLoss, SinkhornLoss
from .sinkhorn import SinkhornResult, sinkhorn, sinkhorn_plan
from .sinkhorn_divergence import sinkhorn_divergence

__all__ = [
    "mmd",
    "jmmd",
    "gaussian_bandwidths",
    "coral",
    "sinkhorn",
    "SinkhornResult",
    "sinkhorn_divergence",
    "sinkhorn_plan",
    "jdot",
    "JDOTResult",
    "gradient_reversal",
    "domain_adversarial",
    "entropy",
    "multilinear_map",
    "randomized_multilinear_map",
    "cdan_entropy_weights",
    "conditional_domain_adversarial",
    "margin_disparity_discrepancy",
    "minimum_class_confusion",
    "batch_nuclear_norm",
    "adaptive_feature_norm",
    "hard_feature_norm",
    "classifier_discrepancy",
    "information_maximization",
    "cluster_pseudo_labels",
    "MMDLoss",
    "JMMDLoss",
    "CORALLoss",
    "SinkhornLoss",
    "GradientReversal",
]
