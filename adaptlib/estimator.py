"""A scikit-learn classifier that adapts to a target domain: NumPy arrays in, predictions out.

:class:`DomainAdaptationClassifier` wraps the library's pieces for users whose data are two
arrays: it standardizes the inputs, builds an MLP :class:`~adaptlib.AdaptModel`, trains it with
the shared :class:`~adaptlib.Trainer` and any method of :data:`adaptlib.METHODS`, and answers
``predict``, ``predict_proba``, ``decision_function`` and ``score`` as any scikit-learn
classifier, so ``GridSearchCV``, ``cross_val_score`` and ``clone`` work with it.
"""
from __future__ import annotations

import copy
import warnings
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted

from .methods import Method, get_method
from ._precision import check_device
from .models import AdaptModel, mlp
from .trainer import Trainer

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    def _validate_data(est, X="no_validation", y="no_validation", reset=True, **kw):  # type: ignore[misc]
        return est._validate_data(X, y, reset=reset, **kw)

__all__ = ["DomainAdaptationClassifier"]


class DomainAdaptationClassifier(ClassifierMixin, BaseEstimator):
    """Unsupervised domain adaptation as a scikit-learn classifier.

    ``fit(X, y, X_target)`` trains on labelled source rows ``X`` ``(n, d)`` with labels ``y``
    ``(n,)`` and unlabelled target rows ``X_target`` ``(m, d)``; ``predict`` then labels new rows
    (usually the target's). The network is ``mlp(d, hidden, dropout)`` followed by a bottleneck
    of ``bottleneck`` units (with BatchNorm when ``bottleneck_norm``) and a linear classifier;
    the objective is the one of ``method`` (e.g. DANN: source cross-entropy plus a
    domain-adversarial term through gradient reversal, Ganin et al., JMLR 2016); the optimizer,
    schedule and batches are the :class:`~adaptlib.Trainer`'s.

    Two ways to give the target rows:

    * explicitly, ``fit(X_source, y_source, X_target)`` (the form of this library's Trainer);
    * skada's convention (scikit-adaptation), ``fit(X, y, sample_domain=sample_domain)``:
      ``X`` stacks every row, ``sample_domain`` ``(n,)`` holds a positive integer for source rows
      and a negative one for target rows, whose ``y`` is ignored (skada writes -1 there).

    Without target rows (``X_target=None`` and no ``sample_domain``, as scikit-learn's own
    ``fit(X, y)`` calls do) the model is trained on the source only: methods that need target
    data then train as ``"source-only"`` with a ``UserWarning``.

    Labels may be any values scikit-learn accepts (strings, non-contiguous integers): they are
    encoded with :class:`~sklearn.preprocessing.LabelEncoder`, and ``classes_`` holds them in
    sorted order (the column order of ``predict_proba``).

    Args:
        method: a registry name of :data:`adaptlib.METHODS` (``"dann"``, ``"dan"``, ``"mcc"``,
            ...), a list of names for a composition (``["dann", "mcc"]``: their terms summed,
            :func:`adaptlib.get_method`), or a :class:`~adaptlib.methods.Method` instance (copied
            at each ``fit``).
        method_kwargs: the method's hyper-parameters, e.g. ``{"trade_off": 0.5}`` (by name only).
        hidden: widths of the MLP's hidden layers.
        bottleneck: bottleneck width (``None``: none; features are the last hidden layer).
        dropout: dropout after each hidden layer, in ``[0, 1)``.
        bottleneck_norm: BatchNorm in the bottleneck.
        steps: optimizer steps.
        batch_size: rows per source batch and per target batch (capped at the number of rows).
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"``; lr: base learning rate;
            weight_decay; lr_schedule: ``"cosine"``, ``"inv"`` or ``"constant"``;
            label_smoothing: of the source cross-entropy, in ``[0, 1)``.
        standardize: z-score every feature with the mean and population std of all training
            rows, source and target together (no label is used); the same map is applied in
            ``predict``. Constant features are only centred. A scaler in a ``Pipeline`` in front
            of this estimator would not see ``X_target``: use this option instead.
        random_state: ``None``, an int or a ``numpy.random.RandomState``: draws the seed of the
            model's initialisation, dropout and batches. An int makes ``fit`` deterministic on the
            CPU (the same arrays give the same predictions); ``fit`` leaves the global torch RNG
            as it found it.
        device: ``"cpu"``, ``"cuda"``, ...; precision: ``"32"``, ``"bf16"`` or ``"fp16"``
            (the Trainer's; checked at ``fit``).
        verbose: show the Trainer's progress bar.

    Attributes:
        classes_: ``(C,)`` the class labels. n_features_in_: ``d``.
        model_: the trained :class:`~adaptlib.AdaptModel` (eval mode, on ``device``).
        history_: the Trainer's :class:`~adaptlib.History` (loss terms per logged step).
        method_: the name of the method trained (``"source-only"`` after a fall-back).
        mean_, scale_: ``(d,)`` the standardization (zeros and ones without ``standardize``).

    Raises:
        ValueError: (at ``fit``) bad arrays (NaN, inf, sparse, wrong shapes: scikit-learn's
            checks), fewer than 2 classes, ``X_target`` with another number of features, both
            ``X_target`` and ``sample_domain``, a ``sample_domain`` without source rows, or a bad
            parameter (named by the Trainer, the model or the method).

    Example::

        >>> clf = DomainAdaptationClassifier("dann", steps=300, random_state=0)
        >>> clf.fit(X_source, y_source, X_target).predict(X_target)   # doctest: +SKIP
    """

    def __init__(self, method: Union[str, Method] = "dann", method_kwargs: Optional[Mapping[str, Any]] = None, *,
                 hidden: Sequence[int] = (512,), bottleneck: Optional[int] = 128, dropout: float = 0.5,
                 bottleneck_norm: bool = True, steps: int = 1000, batch_size: int = 64, optimizer: str = "adam",
                 lr: float = 1e-3, weight_decay: float = 0.0, lr_schedule: str = "cosine",
                 label_smoothing: float = 0.1, standardize: bool = True, random_state: Any = None,
                 device: str = "cpu", precision: str = "32", verbose: bool = False) -> None:
        self.method = method
        self.method_kwargs = method_kwargs
        self.hidden = hidden
        self.bottleneck = bottleneck
        self.dropout = dropout
        self.bottleneck_norm = bottleneck_norm
        self.steps = steps
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.lr_schedule = lr_schedule
        self.label_smoothing = label_smoothing
        self.standardize = standardize
        self.random_state = random_state
        self.device = device
        self.precision = precision
        self.verbose = verbose

    # ------------------------------------------------------------------ scikit-learn tags
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.target_tags.required = True
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"allow_nan": False, "requires_y": True}

    # ------------------------------------------------------------------ fitting
    def _split_domains(self, X, y, X_target, sample_domain):
        """``(X_source, y_source, X_target or None)`` from either calling convention, validated."""
        if sample_domain is not None:
            if X_target is not None:
                raise ValueError("give the target rows either as X_target or through sample_domain, not both")
            X = check_array(X, dtype=np.float32)
            dom = np.asarray(sample_domain).reshape(-1)
            if dom.shape[0] != X.shape[0] or not np.issubdtype(dom.dtype, np.integer) or (dom == 0).any():
                raise ValueError(f"sample_domain must be ({X.shape[0]},) non-zero integers (positive: source row, "
                                 f"negative: target row), got {dom.dtype} shape {dom.shape}")
            if not (dom > 0).any():
                raise ValueError("sample_domain marks no source row (positive value): the source rows carry the "
                                 "labels to learn from")
            tgt = X[dom < 0] if (dom < 0).any() else None
            X, y = X[dom > 0], np.asarray(y)[dom > 0]
            return X, y, tgt
        return X, y, X_target

    def fit(self, X, y, X_target=None, *, sample_domain=None) -> "DomainAdaptationClassifier":
        """Train on labelled source rows and unlabelled target rows; return ``self``.

        Args:
            X: ``(n, d)`` source rows (array-like, numbers), or every row with ``sample_domain``.
            y: ``(n,)`` their labels (any values a classifier takes; target rows' are ignored with
                ``sample_domain``).
            X_target: ``(m, d)`` unlabelled target rows, or ``None`` (source-only training).
            sample_domain: skada's ``(n,)`` domain labels: positive for source, negative for target.

        Raises:
            ValueError: see the class docstring.

        Warns:
            UserWarning: the method needs target rows and none were given (it trains as
                ``"source-only"``).
        """
        Xs, ys, Xt = self._split_domains(X, y, X_target, sample_domain)
        Xs, ys = _validate_data(self, Xs, ys, dtype=np.float32)
        check_classification_targets(ys)
        encoder = LabelEncoder().fit(ys)
        self.classes_ = encoder.classes_
        if len(self.classes_) < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 classes in y; got 1 class "
                             f"({self.classes_[0]!r})")
        if Xt is not None:
            Xt = check_array(Xt, dtype=np.float32, input_name="X_target")
            if Xt.shape[1] != Xs.shape[1]:
                raise ValueError(f"X_target has {Xt.shape[1]} features, but X has {Xs.shape[1]}; both domains "
                                 f"need the same features")
        rows = Xs if Xt is None else np.concatenate([Xs, Xt])
        if self.standardize:
            self.mean_ = rows.mean(axis=0, dtype=np.float64)
            std = rows.std(axis=0, dtype=np.float64)
            self.scale_ = np.where(std > 0, std, 1.0)
        else:
            self.mean_, self.scale_ = np.zeros(Xs.shape[1]), np.ones(Xs.shape[1])

        method = copy.deepcopy(self.method) if isinstance(self.method, Method) else \
            get_method(self.method, **dict(self.method_kwargs or {}))
        if Xt is None and method.uses_target:
            warnings.warn(f"{type(self).__name__}: method {method.name!r} needs unlabelled target rows and fit got "
                          f"none (X_target=None): training source-only; pass X_target (or sample_domain) to adapt",
                          UserWarning, stacklevel=2)
            method = get_method("source-only")
        self.method_ = method.name
        seed = int(check_random_state(self.random_state).randint(0, 2 ** 31 - 1))
        device = check_device(self.device)  # an absent device: one clear error before anything runs
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # the user's global RNG is left as it was
            torch.manual_seed(seed)
            model = AdaptModel(mlp(Xs.shape[1], list(self.hidden), dropout=float(self.dropout)),
                               num_classes=len(self.classes_), bottleneck_dim=self.bottleneck,
                               bottleneck_norm=bool(self.bottleneck_norm))
            n_s, n_t = Xs.shape[0], (Xt.shape[0] if Xt is not None else Xs.shape[0])
            trainer = Trainer(model, method, steps=self.steps, batch_size=min(self.batch_size, n_s),
                              target_batch_size=min(self.batch_size, n_t), optimizer=self.optimizer, lr=self.lr,
                              weight_decay=self.weight_decay, lr_schedule=self.lr_schedule,
                              label_smoothing=self.label_smoothing, seed=seed, device=self.device,
                              precision=self.precision, progress_bar=bool(self.verbose),
                              log_every=max(1, min(50, self.steps)))
            source = (torch.from_numpy(self._transform(Xs)), torch.from_numpy(encoder.transform(ys).astype(np.int64)))
            target = torch.from_numpy(self._transform(Xt)) if Xt is not None and method.uses_target else None
            self.history_ = trainer.fit(source, target)
        self.model_ = model.eval()
        return self

    # ------------------------------------------------------------------ prediction
    def _transform(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.mean_) / self.scale_).astype(np.float32)

    def decision_function(self, X) -> np.ndarray:
        """Class scores of rows ``X`` ``(n, d)``: the network's logits ``(n, C)`` (float64), or for two
        classes the ``(n,)`` log-odds of ``classes_[1]`` (logit 1 - logit 0), as scikit-learn expects.

        Raises:
            NotFittedError: before ``fit``. ValueError: bad ``X`` or another number of features.
        """
        logits = self._logits(X)
        return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits

    def _logits(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        X = _validate_data(self, X, dtype=np.float32, reset=False)
        predictor = Trainer(self.model_, "source-only", device=self.device, progress_bar=False)  # its predict only
        return predictor.predict(torch.from_numpy(self._transform(X))).double().numpy()

    def predict_proba(self, X) -> np.ndarray:
        """``(n, C)`` class probabilities of rows ``X`` (softmax of the logits, float64; columns in
        ``classes_`` order; each row sums to 1).

        Raises:
            NotFittedError: before ``fit``. ValueError: bad ``X`` or another number of features.
        """
        z = self._logits(X)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        """``(n,)`` predicted labels (values of ``classes_``) of rows ``X`` ``(n, d)``.

        Raises:
            NotFittedError: before ``fit``. ValueError: bad ``X`` or another number of features.
        """
        logits = self._logits(X)  # checks that the estimator is fitted
        return self.classes_[logits.argmax(axis=1)]

