"""The "Objective" section of the method pages (scripts/docs_hooks.py: ``objective_section``).

Every registered method carries its objective as the class attribute ``Method.objective``: the
paper's objective in the paper's notation, then adaptlib's loss terms and the estimator computed
on a mini-batch, with display math. The docs build renders it at the top of the method's page and
fails when it is missing, has no display math, or does not name a loss term the step returns.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]



def _display_blocks(markdown: str) -> list:
    return re.findall(r"^\$\$\n(.*?)\n\$\$$", markdown, flags=re.M | re.S)


def test_every_registered_method_has_an_objective_with_display_math(hooks):
    from adaptlib.methods import METHODS, Method

    assert Method.objective == ""  # the base class has none: each method writes its own
    for name, cls in METHODS.items():
        text = cls.objective
        assert text.strip(), name
        assert ".. math::" in text, name
        md = hooks.objective_section(name)
        blocks = _display_blocks(md)
        # the paper's objective and adaptlib's estimator: at least one display block each
        assert len(blocks) >= 2, (name, md)
        assert all(b.strip() for b in blocks), name
        assert ".. math::" not in md and ":math:`" not in md, name  # all converted for KaTeX
        # every display block's environments are balanced (a broken block shows raw TeX)
        for b in blocks:
            assert b.count(r"\begin{aligned}") == b.count(r"\end{aligned}"), (name, b)
            assert b.count("{") == b.count("}"), (name, b)
        paper, _, ours = md.partition("**In adaptlib.**")
        assert ours, f"{name}: the objective must have an '**In adaptlib.**' part after the paper's"
        assert _display_blocks(paper) and _display_blocks(ours), name
        # the paper part cites the paper (a year), except the source-only baseline, which has none
        assert re.search(r"\b(19|20)\d\d\b", paper) or name == "source-only", name
        # adaptlib's part names every loss term that the step returns
        terms, _ = hooks.loss_terms(cls)
        for term in terms:
            assert f"`{term}`" in md, (name, term)
        assert "stimat" in ours, f"{name}: say which estimator is computed on the mini-batch"


def test_objective_comes_first_on_the_method_page(hooks):
    page = hooks.method_page("dann")
    objective = page.index("## Objective")
    algorithm = page.index("## Algorithm")
    assert page.index("# `dann`") < objective < algorithm < page.index("## Loss terms")
    section = page[objective:algorithm]
    assert len(_display_blocks(section)) >= 3
    assert r"E(\theta_f, \theta_y, \theta_d)" in section  # the paper's notation (Ganin et al.)
    assert r"\texttt{domain}" in section and "R_{\\lambda_p}" in section  # adaptlib's term


def test_objective_section_refuses_incomplete_objectives(hooks, monkeypatch):
    from mkdocs.exceptions import PluginError

    from adaptlib.methods import DANN, METHODS

    registry = dict(METHODS)
    monkeypatch.setattr(hooks, "_methods", lambda: registry)

    class NoObjective(DANN):
        name = "no-objective"
        objective = ""

    class NoMath(DANN):
        name = "no-math"
        objective = "``classification`` and ``domain``, in words only."

    class MissingTerm(DANN):
        name = "missing-term"
        objective = DANN.objective.replace("``domain``", "the domain loss")

    for cls, message in ((NoObjective, "empty"), (NoMath, "display math"), (MissingTerm, r"\['domain'\]")):
        registry[cls.name] = cls
        with pytest.raises(PluginError, match=message):
            hooks.objective_section(cls.name)
    assert "``domain``" in DANN.objective  # the check above removed a term that is there


def test_objective_is_text_only():
    """The objective is documentation: setting it changes no hyper-parameter and no loss term."""
    from adaptlib.methods import METHODS, Method

    for name, cls in METHODS.items():
        assert isinstance(cls.objective, str), name
        assert "objective" not in cls().hparams(), name
        assert "objective" not in cls.search_space, name
    assert "objective" in Method.__dict__


def test_composed_methods_objective_is_documented():
    """docs/methods.md says what a composition such as dann+mcc computes, with display math, and
    names the prefixed terms that Composed logs."""
    import torch

    from adaptlib import AdaptModel, mlp
    from adaptlib.methods import METHODS, Batch, LabeledBatch, Progress, UnlabeledBatch

    text = (REPO / "docs" / "methods.md").read_text(encoding="utf-8")
    section = text[text.index("## Composing methods"):]
    assert "$$" in section and r"\begin{aligned}" in section
    torch.manual_seed(0)
    model = AdaptModel(mlp(6, [8]), num_classes=3, bottleneck_dim=4)
    method = METHODS["dann+mcc"]()
    method.setup(model)
    batch = Batch(LabeledBatch(torch.randn(5, 6), torch.randint(0, 3, (5,))), UnlabeledBatch(torch.randn(5, 6)))
    out = method.loss_terms(model, batch, Progress(3, 10))
    for name in list(out.losses) + list(out.metrics):
        assert f"`{name}`" in section, name
