"""MkDocs hook of adaptlib's documentation site (``mkdocs.yml``: ``hooks:``).

At build time it

* generates one page per registered method, ``methods/<name>.md``, from
  ``adaptlib.methods.METHODS``: the class docstring (through mkdocstrings), the loss terms and
  logged metrics read from the method's ``loss_terms`` source, the defaults and search space
  from ``search_space`` / ``HParam`` and the ``__init__`` signature, the README's numbers for
  the method, and a minimal example (:func:`method_example`, which a test runs);
* generates ``results.md`` from the ``## Results`` section of ``README.md`` (tables and
  figures, so the two never disagree);
* copies a local KaTeX (``$ADAPTLIB_KATEX_DIR`` or ``.docs-vendor/katex``, e.g. the ``dist``
  folder of ``npm pack katex``) into ``site/javascripts/vendor/katex`` when there is one, so
  that formulas render offline; without it the pages load KaTeX from a CDN;
* fails the build when a public name (``__all__``) of ``adaptlib`` or of one of its public
  packages is missing from the API reference.
"""
from __future__ import annotations

import ast
import inspect
import os
import re
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]

# Public modules whose __all__ must appear in the API reference, and the page that holds them.
REFERENCE = {
    "adaptlib": "reference/adaptlib",
    "adaptlib.losses": "reference/losses",
    "adaptlib.kernels": "reference/kernels",
    "adaptlib.methods": "reference/methods",
    "adaptlib.validation": "reference/validation",
    "adaptlib.compare": "reference/compare",
    "adaptlib.studies": "reference/studies",
    "adaptlib.datasets": "reference/datasets",
    "adaptlib.vision": "reference/vision",
}


# ------------------------------------------------------------------ method pages
def _use_this_checkout() -> None:
    """Document this checkout's adaptlib, whatever adaptlib the environment has installed
    (called at every event: MkDocs restores ``sys.path`` after loading a hook)."""
    if "adaptlib" not in sys.modules and str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def _methods():
    _use_this_checkout()
    import adaptlib
    from adaptlib.methods import METHODS

    if Path(adaptlib.__file__).resolve().parents[1] != ROOT:
        raise PluginError(f"the docs build imported adaptlib from {adaptlib.__file__}, not from {ROOT}")

    return METHODS


def _dict_keys(node: ast.AST) -> List[str]:
    if isinstance(node, ast.Dict):
        return [k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
    return []


def loss_terms(cls) -> Tuple[List[str], List[str]]:
    """``(loss terms, metrics)`` named in the ``StepOutput(...)`` of ``cls.loss_terms`` (its
    own or inherited), read from the source: dict literals, and for a variable the dict
    literal assigned to it and the keys set on it with ``name["key"] = ...``."""
    for klass in cls.__mro__:
        if "loss_terms" in vars(klass):
            break
    src = textwrap.dedent(inspect.getsource(vars(klass)["loss_terms"]))
    tree = ast.parse(src)
    assigned: Dict[str, List[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    assigned.setdefault(t.id, []).extend(_dict_keys(node.value))
                elif (isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name)
                      and isinstance(t.slice, ast.Constant) and isinstance(t.slice.value, str)):
                    assigned.setdefault(t.value.id, []).append(t.slice.value)
    terms: List[str] = []
    metrics: List[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "StepOutput":
            for i, arg in enumerate(node.args[:2]):
                keys = assigned.get(arg.id, []) if isinstance(arg, ast.Name) else _dict_keys(arg)
                target = terms if i == 0 else metrics
                target.extend(k for k in keys if k not in target)
    return terms, metrics


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value)


def _dist(d) -> str:
    name = type(d).__name__
    if name in ("Uniform", "LogUniform"):
        return f"{name}({_fmt(d.low)}, {_fmt(d.high)})"
    if name == "Choice":
        return "one of " + ", ".join(f"`{_fmt(v)}`" for v in d.values)
    if name == "ScaledGrid":
        return f"`{tuple(d.grid)}` × s, s ~ LogUniform({_fmt(d.low)}, {_fmt(d.high)})"
    return f"`{d!r}`"


def method_example(name: str, steps: int = 50) -> str:
    """A minimal, runnable example of training method ``name`` on random stand-in tensors."""
    cls = _methods()[name]
    lines = [
        "import torch",
        "from adaptlib import AdaptModel, Trainer, mlp",
        "",
        "torch.manual_seed(0)",
        "# labelled source; target inputs (yt only evaluates)",
        "xs, ys = torch.randn(200, 20), torch.randint(0, 3, (200,))",
        "xt, yt = torch.randn(150, 20) + 0.5, torch.randint(0, 3, (150,))",
        "model = AdaptModel(mlp(20, [64]), num_classes=3, bottleneck_dim=32)",
        f"trainer = Trainer(model, {name!r}, steps={steps}, batch_size=32, lr=0.01)",
    ]
    if cls.uses_target_labels:
        lines.append("labelled = (xt[:9], yt[:9])  # a few labelled target samples")
        lines.append("history = trainer.fit((xs, ys), xt, target_labeled=labelled,")
        lines.append("                      eval_sets={\"target\": (xt[9:], yt[9:])})")
    elif not cls.uses_target:
        lines.append("history = trainer.fit((xs, ys), eval_sets={\"target\": (xt, yt)})")
    else:
        lines.append("history = trainer.fit((xs, ys), xt, eval_sets={\"target\": (xt, yt)})")
    lines += ["print(history.train[-1])     # the loss terms of the last step", "print(history.final_eval())"]
    return "\n".join(lines)


def _readme_tables() -> Dict[str, Tuple[List[str], Dict[str, List[str]]]]:
    """``{heading: (columns, {row label: cells})}`` of the first table under each ``###`` heading."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    out = {}
    for block in re.split(r"^### ", text, flags=re.M)[1:]:
        heading = block.splitlines()[0].strip()
        rows = [ln for ln in block.splitlines() if ln.startswith("|")]
        if len(rows) < 3:
            continue
        cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows]
        table_rows = {c[0].strip("*"): c[1:] for c in cells[2:]}
        out[heading] = (cells[0][1:], table_rows)
    return out


def _results_section(name: str) -> str:
    tables = _readme_tables()
    rows = []
    for heading, (cols, table) in tables.items():
        if heading.startswith("A study"):
            continue
        col = next((i for i, c in enumerate(cols) if c.split(" ")[0] == name), None)
        if col is not None and "Mean" in table:
            rows.append(f"| {heading} | {table['Mean'][col]} | source-only {table['Mean'][0]} |")
    study = next((v for k, v in tables.items() if k.startswith("A study")), None)
    study_line = ""
    if study is not None:
        cols, table = study
        key = next((k for k in table if k.split(" ")[0] == name), None)
        if key is not None:
            study_line = (f"\nIn the Office-Caltech10 SURF study (hyper-parameters and checkpoint chosen "
                          f"without target labels, DEV): **{table[key][0]}** (oracle selection "
                          f"{table[key][2]}); see [Results](../results.md).\n")
    if not rows:
        return ("No comparison of this method on adaptlib's benchmarks has been run yet "
                "(the README's tables cover `adaptlib compare`'s seven default methods); "
                "run one with `adaptlib compare office-caltech10-surf --methods " + name + "`.\n")
    head = ("Target accuracy (%), mean ± std over 3 seeds of the 12- (SURF, Amazon) or 2-task "
            "(MNIST-USPS) mean, default hyper-parameters, the same MLP and budget for every "
            "method (README, `adaptlib compare`):\n\n"
            "| benchmark | this method | baseline |\n|---|---|---|\n")
    paper = ("\n**The paper's numbers.** Not placed beside these: the paper does not report these "
             "benchmarks with this network and budget, so its numbers would compare different "
             "pipelines. The README lists the published shallow methods on the same SURF features "
             "(JDA 46.3, CORAL 48.8, OT-GL 47.7, MEDA 52.7) as a reference for the whole pipeline.\n")
    return head + "\n".join(rows) + "\n" + study_line + paper


def method_page(name: str) -> str:
    cls = _methods()[name]
    mod = cls.__module__.replace("adaptlib.methods.", "")
    terms, metrics = loss_terms(cls)
    sig = inspect.signature(cls.__init__)
    init_defaults = {k: p.default for k, p in sig.parameters.items()
                     if k != "self" and p.default is not inspect.Parameter.empty}
    out = [f"# `{name}` — {cls.__name__}", "",
           f"`adaptlib.methods.{cls.__name__}` (file `adaptlib/methods/{mod}.py`), "
           f"registry name `{name!r}`. Uses unlabelled target data: **{'yes' if cls.uses_target else 'no'}**; "
           f"uses target labels: **{'yes (few-shot; not comparable with unsupervised methods)' if cls.uses_target_labels else 'no'}**.",
           "", "## Algorithm", "",
           f"::: adaptlib.methods.{cls.__name__}",
           "    options:",
           "      show_root_heading: false",
           "      members: false",
           "", "## Loss terms", "",
           "The Trainer sums these terms (each already weighted) and does the backward pass; "
           "`history.train` logs each one:", ""]
    out += [f"- `{t}`" for t in terms]
    if metrics:
        out += ["", "Logged metrics (not optimised): " + ", ".join(f"`{m}`" for m in metrics) + "."]
    out += ["", "## Defaults and search space", "",
            "Declared once in `search_space` (default and search distribution side by side); a study's "
            "configuration 0 is the defaults, the others are drawn from the distributions. The learning "
            "rate is the Trainer's and is searched by studies for every method alike.", "",
            "| hyper-parameter | default | search distribution |", "|---|---|---|"]
    for k, hp in cls.search_space.items():
        out.append(f"| `{k}` | `{_fmt(hp.default)}` | {_dist(hp.distribution)} |")
    fixed = [k for k in init_defaults if k not in cls.search_space]
    for k in fixed:
        out.append(f"| `{k}` | `{_fmt(init_defaults[k])}` | not searched |")
    out += ["", "## Results", "", _results_section(name),
            "## Example", "", "```python", method_example(name, steps=200), "```", ""]
    return "\n".join(out)


# ------------------------------------------------------------------ results page
def results_page() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"^## Results\n(.*?)(?=^## )", text, flags=re.M | re.S)
    if m is None:
        raise PluginError("README.md has no '## Results' section for docs/results.md")
    body = m.group(1).replace("](docs/", "](")
    # Links to other files of the repository (not part of the site) become their path.
    body = re.sub(r"\[([^\]]+)\]\((?!https?:|surf-study/)([^)]+)\)",
                  lambda mm: mm.group(1) if mm.group(1).strip("`") == mm.group(2) else f"{mm.group(1)} (`{mm.group(2)}`)",
                  body)
    body = re.sub(r"^### ", "## ", body, flags=re.M)
    # GitHub starts a list right after a paragraph line; Python-Markdown needs a blank line.
    body = re.sub(r"^(?![-*\s|])(.+)\n(?=[-*] )", r"\1\n\n", body, flags=re.M)
    figures = ("\n## Figures of the SURF study\n\n"
               "![accuracy against training step](surf-study/accuracy_vs_step.png)\n\n"
               "![per-task accuracy](surf-study/per_task_office-caltech10-surf.png)\n\n"
               "The complete study report (every validator, pairwise tests, per-task tables) is "
               "[SURF study report](surf-study/report.md).\n")
    return ("# Results\n\n*Generated from the `## Results` section of the README at build time.*\n"
            + body + figures)


# ------------------------------------------------------------------ MkDocs events
def on_config(config, **kwargs):
    names = list(_methods())
    for entry in config["nav"]:
        if isinstance(entry, dict) and "Methods" in entry:
            pages = [f"methods/{n}.md" for n in names]
            entry["Methods"] = [e for e in entry["Methods"] if not (isinstance(e, dict) and list(e.values())[0] in pages)]
            entry["Methods"] += [{n: p} for n, p in zip(names, pages)]
    return config


def on_files(files, config, **kwargs):
    for name in _methods():
        files.append(File.generated(config, f"methods/{name}.md", content=method_page(name)))
    files.append(File.generated(config, "results.md", content=results_page()))
    return files


def _katex_dir() -> Optional[Path]:
    for cand in (os.environ.get("ADAPTLIB_KATEX_DIR"), ROOT / ".docs-vendor" / "katex"):
        if cand and (Path(cand) / "katex.min.js").is_file():
            return Path(cand)
    return None


def on_post_build(config, **kwargs):
    site = Path(config["site_dir"])
    src = _katex_dir()
    if src is not None:
        dst = site / "javascripts" / "vendor" / "katex"
        dst.mkdir(parents=True, exist_ok=True)
        for f in ("katex.min.js", "katex.min.css"):
            shutil.copy2(src / f, dst / f)
        (dst / "fonts").mkdir(exist_ok=True)
        for font in (src / "fonts").glob("*.woff2"):
            shutil.copy2(font, dst / "fonts" / font.name)
    import importlib

    _use_this_checkout()
    missing = []
    for module, page in REFERENCE.items():
        html = (site / page / "index.html").read_text(encoding="utf-8")
        mod = importlib.import_module(module)
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            home = getattr(obj, "__module__", module)  # functions shadowing their module: rendered from it
            if (name == "__version__" or inspect.ismodule(obj) or f'id="{module}.{name}"' in html
                    or f'id="{home}.{name}"' in html):
                continue
            missing.append(f"{module}.{name} (page {page})")
    if missing:
        raise PluginError("public names missing from the API reference: " + ", ".join(missing))
