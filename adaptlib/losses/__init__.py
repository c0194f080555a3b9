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

All functions validate their inputs (errors name the offending argument), work in float32
and float64 on the inputs' device, and floor every data-derived scale so that identical or
constant inputs never produce NaN. MMD, JMMD, CORAL and Sinkhorn also accept float16 and
bfloat16 inputs (e.g. under ``torch.autocast``): they compute and return float32, and the
gradients come back in the input dtype. JDOT rejects half precision with a ``TypeError``;
:func:`domain_adversarial`, :func:`entropy` and :func:`gradient_reversal` compute in the
input dtype. ``scripts/fuzz_losses.py`` fuzzes all of them.

``mmd``, ``jmmd``, ``sinkhorn`` and ``sinkhorn_divergence`` run along one of three
computation paths (``path="dense"``, ``"tiled"`` or ``"triton"``; ``"auto"`` by default),
described in :mod:`adaptlib.kernels`.
"""
from .adversarial import domain_adversarial, entropy, gradient_reversal
from .coral import coral
from .jdot import JDOTResult, jdot
from .mmd import gaussian_bandwidths, jmmd, mmd
from .modules import CORALLoss, GradientReversal, JMMDLoss, MMDLoss, SinkhornLoss
from .sinkhorn import SinkhornResult, sinkhorn, sinkhorn_divergence, sinkhorn_plan

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
    "MMDLoss",
    "JMMDLoss",
    "CORALLoss",
    "SinkhornLoss",
    "GradientReversal",
]
