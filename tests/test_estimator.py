"""DomainAdaptationClassifier: scikit-learn's estimator checks, real data from two NumPy arrays to
target predictions, both calling conventions, and model selection (GridSearchCV, cross_val_score)."""
from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.utils.estimator_checks import parametrize_with_checks

from adaptlib import DomainAdaptationClassifier
from adaptlib.datasets import load_office_caltech10_surf

# Small enough for the ~55 checks to run in seconds; the checks fit it on blobs and small random arrays.
CHECKED = DomainAdaptationClassifier(steps=20, hidden=(16,), bottleneck=8, lr=1e-2, batch_size=32, random_state=0)
EXPECTED_FAILURES = {
    # float32 network: a row's logits can differ in the 7th digit when it is predicted in a
    # batch of another size (BLAS blocking), and the check's tolerance is 1e-7 absolute.
    "check_methods_subset_invariance": "float32 logits differ by ~1e-7 between batch sizes (BLAS blocking)",
}


@parametrize_with_checks([CHECKED], expected_failed_checks=lambda est: EXPECTED_FAILURES)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "DANN needs target rows: training source-only"
        check(estimator)


@pytest.fixture(scope="module")
def surf(data_root):
    """Amazon (source) and Webcam (target) SURF features as NumPy arrays, labels as class names,
    the GFK/JDA preprocessing done by the loader (what a user would have in two .npy files)."""
    a = load_office_caltech10_surf("amazon", data_root)
    w = load_office_caltech10_surf("webcam", data_root)
    names = np.array(a.classes)
    return a.x.numpy(), names[a.y.numpy()], w.x.numpy(), names[w.y.numpy()]


def test_two_arrays_to_target_predictions(surf):
    """The tutorial in one test: source arrays and unlabelled target arrays in, target labels out.
    Both calling conventions train the same model (same random_state), and the estimator leaves
    the global torch RNG alone."""
    xs, ys, xt, yt = surf
    state = torch.get_rng_state()
    clf = DomainAdaptationClassifier("dann", hidden=(128,), bottleneck=64, steps=120, random_state=0)
    pred = clf.fit(xs, ys, xt).predict(xt)
    assert torch.equal(torch.get_rng_state(), state)
    assert pred.shape == yt.shape and set(pred) <= set(clf.classes_) and clf.classes_[0] == "back_pack"
    acc = float((pred == yt).mean())
    assert acc > 0.30, acc  # chance is 0.10; source-only MLPs reach about 0.40 on A->W
    assert clf.score(xt, yt) == pytest.approx(acc)
    proba = clf.predict_proba(xt)
    assert proba.shape == (len(xt), 10) and np.allclose(proba.sum(1), 1.0)
    assert (clf.classes_[proba.argmax(1)] == pred).all()
    assert [r["domain"] for r in clf.history_.train][-1] > 0  # the adversarial term was trained
    # skada's convention: every row in X, negative sample_domain for target rows (labels ignored)
    x_all = np.concatenate([xs, xt])
    y_all = np.concatenate([ys, np.full(len(xt), "?")])
    dom = np.concatenate([np.ones(len(xs), int), -np.ones(len(xt), int)])
    same = clone(clf).fit(x_all, y_all, sample_domain=dom)
    assert (same.predict(xt) == pred).all()
    assert np.array_equal(same.classes_, clf.classes_)  # the masked target labels are not classes


def test_labels_are_arbitrary_and_fit_is_deterministic():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5)).astype(np.float32)
    y = np.where(x[:, 0] > 0, 7, -3)  # non-contiguous integer labels
    a = DomainAdaptationClassifier("dan", steps=30, hidden=(16,), random_state=3).fit(x, y, x + 0.5)
    b = DomainAdaptationClassifier("dan", steps=30, hidden=(16,), random_state=3).fit(x, y, x + 0.5)
    assert list(a.classes_) == [-3, 7] and set(a.predict(x)) <= {-3, 7}
    assert np.array_equal(a.predict_proba(x), b.predict_proba(x))
    assert a.decision_function(x).shape == (120,)  # two classes: the log-odds of classes_[1]
    assert np.allclose(a.decision_function(x), np.log(a.predict_proba(x)[:, 1] / a.predict_proba(x)[:, 0]),
                       atol=1e-6)


def test_fit_errors_name_the_problem():
    x = np.random.default_rng(0).normal(size=(20, 3))
    y = np.arange(20) % 2
    with pytest.raises(ValueError, match="X_target has 4 features"):
        DomainAdaptationClassifier(steps=2).fit(x, y, np.zeros((5, 4)))
    with pytest.raises(ValueError, match="not both"):
        DomainAdaptationClassifier(steps=2).fit(x, y, x, sample_domain=np.ones(20, int))
    with pytest.raises(ValueError, match="no source row"):
        DomainAdaptationClassifier(steps=2).fit(x, y, sample_domain=-np.ones(20, int))
    with pytest.warns(UserWarning, match="training source-only"):
        clf = DomainAdaptationClassifier("dann", steps=2).fit(x, y)
    assert clf.method_ == "source-only"
    with pytest.raises(ValueError, match="device='cuda' is not available") if not torch.cuda.is_available() \
            else contextlib.nullcontext():
        DomainAdaptationClassifier(steps=2, device="cuda").fit(x, y, x)


def test_model_selection_with_target_rows(surf):
    """GridSearchCV and cross_val_score pass X_target to every fit (it is not split: only arrays
    of the length of X are); selection is on held-out *source* rows, no target label is used."""
    xs, ys, xt, _ = surf
    clf = DomainAdaptationClassifier("dann", hidden=(64,), bottleneck=32, steps=40, random_state=0)
    scores = cross_val_score(clf, xs, ys, cv=3, params={"X_target": xt})
    assert scores.shape == (3,) and (scores > 0.2).all()  # 40 steps already learn the source classes
    search = GridSearchCV(clf, {"lr": [1e-4, 3e-3]}, cv=2).fit(xs, ys, X_target=xt)
    assert search.best_params_ == {"lr": 3e-3}  # 40 steps at 1e-4 barely move the weights
    assert search.best_estimator_.predict(xt).shape == (len(xt),)
