"""adaptlib: domain adaptation for PyTorch.

- :mod:`adaptlib.losses`: alignment losses as plain functions of tensors (MMD, JMMD, CORAL,
  Sinkhorn/OT, DeepJDOT, domain-adversarial, entropy).
- :mod:`adaptlib.kernels`: their computation paths (dense, tiled, Triton).
- :mod:`adaptlib.methods`: DA methods that turn a batch into named loss terms.
- :class:`adaptlib.Trainer`: the one training loop all methods share.
- :mod:`adaptlib.datasets`: loaders for real DA benchmarks.
- :mod:`adaptlib.vision`: the pretrained EfficientNet-Lite0 image backbone (``vision`` extra).
- :mod:`adaptlib.compare`: the comparison run behind ``adaptlib compare``.
- :mod:`adaptlib.validation`: validators for model selection without target labels.
- :mod:`adaptlib.studies`: comparison studies behind ``adaptlib study`` (needs the ``study`` extra
  for reports and Dask).
- :func:`adaptlib.encode_labels`: map arbitrary labels (1-based, gaps, strings) to ``0..C-1``.
- :class:`adaptlib.DomainAdaptationClassifier`: the whole pipeline as a scikit-learn classifier,
  ``fit(X_source, y_source, X_target)`` on NumPy arrays.
"""
from . import kernels, losses, methods, validation
from .methods import METHODS, get_method
from .models import AdaptModel, DomainDiscriminator, ModelOutput, RandomAffine, lenet, mlp
from .labels import encode_labels
from .trainer import History, Trainer
from .estimator import DomainAdaptationClassifier

__version__ = "0.1.0"

__all__ = ["Trainer", "History", "AdaptModel", "DomainDiscriminator", "ModelOutput", "mlp", "lenet", "RandomAffine", "METHODS",
           "get_method", "encode_labels", "DomainAdaptationClassifier", "kernels", "losses", "methods", "validation",
           "__version__"]
