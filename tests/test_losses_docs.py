"""The docstring examples of adaptlib.losses run, and public functions document their contract."""
import doctest
import importlib
import inspect

import pytest
import torch
from torch import nn

import adaptlib.losses as losses

MODULES = ["mmd", "_mmd_bandwidths", "coral", "sinkhorn", "sinkhorn_divergence", "jdot", "adversarial", "modules", "conditional", "confusion",
           "feature_norm", "mdd"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(f"adaptlib.losses.{name}")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        result = doctest.testmod(
            module,
            extraglobs={"torch": torch, "nn": nn},
            optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
            verbose=False,
        )
    finally:
        torch.set_num_threads(old)
    assert result.attempted > 0, f"{name} has no docstring example"
    assert result.failed == 0


@pytest.mark.parametrize("name", [n for n in losses.__all__ if inspect.isfunction(getattr(losses, n))])
def test_public_functions_document_their_contract(name):
    doc = inspect.getdoc(getattr(losses, name))
    for section in ("Args:", "Returns:", "Raises:", "Example"):
        assert section in doc, f"{name} docstring lacks {section}"
    assert ".. math::" in doc or ":math:" in doc, f"{name} docstring does not state its math"


def test_public_api_is_complete():
    expected = {"mmd", "jmmd", "gaussian_bandwidths", "coral", "sinkhorn", "SinkhornResult",
                "sinkhorn_divergence", "sinkhorn_plan", "jdot", "JDOTResult", "gradient_reversal",
                "domain_adversarial", "entropy", "MMDLoss", "JMMDLoss", "CORALLoss",
                "SinkhornLoss", "GradientReversal", "multilinear_map", "randomized_multilinear_map",
                "cdan_entropy_weights", "conditional_domain_adversarial", "margin_disparity_discrepancy",
                "minimum_class_confusion", "batch_nuclear_norm", "adaptive_feature_norm", "hard_feature_norm",
                "classifier_discrepancy", "information_maximization", "cluster_pseudo_labels"}
    assert set(losses.__all__) == expected
    for name in expected:
        assert inspect.getdoc(getattr(losses, name)), name
