"""MkDocs hook of adaptlib's documentation site (``mkdocs.yml``: ``hooks:``).

At build time it

* generates one page per registered method, ``methods/<name>.md``, from
  ``adaptlib.methods.METHODS``: the method's ``objective`` (the paper's objective and
  adaptlib's estimator, :func:`objective_section`), the class docstring (through
  mkdocstrings), the loss terms and
  logged metrics read from the method's ``loss_terms`` source, the defaults and search space
  from ``search_space`` / ``HParam`` and the ``__init__`` signature, the README's numbers for
  the method, and a minimal example (:func:`method_example`, which a test runs);
* puts, on each method page, a "Reproduction" table: per benchmark, adaptlib's mean ± std
  over seeds read from ``docs/results/<benchmark>/results.json`` (written by ``adaptlib
  compare <benchmark> --output docs/results/<benchmark>``) beside the paper's own number
  (``Method.paper_results``) and their difference; "pending" where no results file is
  committed (:func:`reproduction_section`);
* generates ``results.md`` from the ``## Results`` section of ``README.md`` (tables and
  figures, so the two never disagree), followed by the committed comparison tables
  (``docs/results/<benchmark>/table.md``);
* copies a local KaTeX (``$ADAPTLIB_KATEX_DIR`` or ``.docs-vendor/katex``, e.g. the ``dist``
  folder of ``npm pack katex``) into ``site/javascripts/vendor/katex`` when there is one, so
  that formulas render offline; without it the pages load KaTeX from a CDN;
* fails the build when a public name (``__all__``) of ``adaptlib`` or of one of its public
  packages is missing from the API reference.
"""
from __future__ import annotations

import ast
import inspect
import json
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
#: Where the committed ``adaptlib compare --output`` folders live, one per benchmark.
RESULTS_DIR = ROOT / "docs" / "results"

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
    "adaptlib.trainer": "reference/trainer",
    "adaptlib.distributed": "reference/distributed",
    # Every name of these three is a top-level name, documented on the adaptlib page.
    "adaptlib.models": "reference/adaptlib",
    "adaptlib.labels": "reference/adaptlib",
    "adaptlib.estimator": "reference/adaptlib",
    "adaptlib.backbones": "reference/backbones",
    "adaptlib.vision": "reference/vision",
    "adaptlib.representations": "reference/representations",
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


def _rst_to_markdown(text: str) -> str:
    """``scripts/docs_rst.py``'s :func:`convert` (the docstrings' reST-to-Markdown rewriting)."""
    import importlib.util

    module = sys.modules.get("adaptlib_docs_rst")
    if module is None:
        spec = importlib.util.spec_from_file_location("adaptlib_docs_rst", Path(__file__).with_name("docs_rst.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        sys.modules["adaptlib_docs_rst"] = module
    return module.convert(text)


def objective_section(name: str) -> str:
    """The "Objective" section of method ``name``: its ``objective`` class attribute (the paper's
    objective in the paper's notation, then adaptlib's loss terms and the estimator computed on a
    mini-batch), reST-flavoured text converted to Markdown (``.. math::`` -> ``$$`` blocks that
    KaTeX renders).

    Raises:
        PluginError: the method has no ``objective``, it has no display math, or it does not
            name one of the loss terms its step returns (as ````term```` in the text): a term
            added to ``loss_terms`` must be explained here too.
    """
    cls = _methods()[name]
    text = inspect.cleandoc(getattr(cls, "objective", "") or "")
    if not text:
        raise PluginError(f"{cls.__name__}.objective is empty: write the method's objective "
                          "(the paper's and adaptlib's, see adaptlib.methods.Method)")
    if ".. math::" not in text:
        raise PluginError(f"{cls.__name__}.objective has no display math (a '.. math::' block)")
    terms, _ = loss_terms(cls)
    missing = [t for t in terms if f"``{t}``" not in text]
    if missing:
        raise PluginError(f"{cls.__name__}.objective does not name its loss terms {missing} "
                          "(write each as ``term``)")
    return _rst_to_markdown(text) + "\n"


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
    """``{heading: (columns, {row label: cells})}`` of the first table under each ``###`` heading of
    ``docs/results-earlier.md`` (the README's tables before issue 10's recipes)."""
    text = (ROOT / "docs" / "results-earlier.md").read_text(encoding="utf-8")
    out = {}
    for block in re.split(r"^### ", text, flags=re.M)[1:]:
        heading = block.splitlines()[0].strip()
        rows = []
        for ln in block.splitlines():  # the first table only: its contiguous run of "|" lines
            if ln.startswith("|"):
                rows.append(ln)
            elif rows:
                break
        if len(rows) < 3:
            continue
        cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows]
        table_rows = {c[0].strip("*"): c[1:] for c in cells[2:]}
        out[heading] = (cells[0][1:], table_rows)
    return out


def _results_section(name: str) -> str:
    """The README's tables for method ``name`` (the earlier measurements, pre-issue-10 recipe)."""
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
        return ("The earlier tables (the seven default methods of the time) do not include this "
                "method; run a comparison with `adaptlib compare office-caltech10-surf --methods "
                + name + "`.\n")
    head = ("The [earlier tables](../results-earlier.md), measured with the shared recipe before issue 10 (SGD 0.01, MLP "
            "128 → 64): target accuracy (%), mean ± std over 3 seeds of the 12- (SURF, Amazon) or "
            "2-task (MNIST-USPS) mean, default hyper-parameters, the same MLP and budget for every "
            "method:\n\n"
            "| benchmark | this method | baseline |\n|---|---|---|\n")
    return head + "\n".join(rows) + "\n" + study_line


# ------------------------------------------------------------------ reproduction tables
def load_results(benchmark: str, results_dir: Optional[Path] = None) -> Optional[dict]:
    """The ``results.json`` that ``adaptlib compare <benchmark> --output <results_dir>/<benchmark>``
    wrote, or None when there is none. Accuracies in it are fractions in [0, 1].

    Raises:
        PluginError: the file is not such a results file (no ``summary`` or ``config``, another
            benchmark, accuracies not fractions): a wrong file must not print wrong numbers.
    """
    path = Path(results_dir if results_dir is not None else RESULTS_DIR) / benchmark / "results.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise PluginError(f"{path}: not JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("summary"), list) or not isinstance(data.get("config"), dict):
        raise PluginError(f"{path}: expected the results.json of `adaptlib compare --output` "
                          "(an object with 'config' and 'summary')")
    if data["config"].get("benchmark") != benchmark:
        raise PluginError(f"{path}: holds results of benchmark {data['config'].get('benchmark')!r}, "
                          f"not {benchmark!r}")
    if data.get("units", {}).get("accuracy") != "fraction in [0, 1]":
        raise PluginError(f"{path}: units.accuracy must be 'fraction in [0, 1]', got {data.get('units')!r}")
    for row in data["summary"]:
        if not 0.0 <= float(row["mean"]) <= 1.0:
            raise PluginError(f"{path}: accuracy {row['mean']!r} of {row['method']} on {row['task']} "
                              "is not a fraction in [0, 1]")
    return data


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def reproduction_section(name: str, results_dir: Optional[Path] = None) -> str:
    """The "Reproduction" table of method ``name``: per benchmark, adaptlib's 12- (or 2-) task
    mean target accuracy, mean ± std over seeds, from the committed comparison results
    (:func:`load_results`), the paper's own number (``Method.paper_results``, percent) and
    adaptlib − paper in points. The difference is printed only when the comparison covered
    every task of the benchmark (the paper's number is a mean over all of them)."""
    from adaptlib.compare import _NETWORK_NAMES
    from adaptlib.datasets import BENCHMARKS

    cls = _methods()[name]
    folder = Path(results_dir if results_dir is not None else RESULTS_DIR)
    paper = dict(getattr(cls, "paper_results", {}) or {})
    unknown = sorted(set(paper) - set(BENCHMARKS))
    if unknown:
        raise PluginError(f"{cls.__name__}.paper_results names unknown benchmarks {unknown}; "
                          f"known are {sorted(BENCHMARKS)}")
    lines = ["| benchmark | adaptlib | paper | adaptlib − paper |", "|---|---|---|---|"]
    notes: List[str] = []
    recipes: List[str] = []
    for bench_name, bench in BENCHMARKS.items():
        data = load_results(bench_name, folder)
        ours, ours_value, full = "", None, False
        if data is None:
            ours = f"pending (no `{_rel(folder / bench_name / 'results.json')}` yet)"
        else:
            row = next((r for r in data["summary"] if r["method"] == name and r["task"] == "Mean"), None)
            tasks = list(data["config"].get("tasks") or [])
            full = set(tasks) >= set(bench.tasks)
            if row is None:
                ours = "not in the committed comparison"
            else:
                ours_value = 100 * float(row["mean"])
                ours = f"{ours_value:.1f} ± {100 * float(row['std']):.1f} ({row['n_seeds']} seed{'s' if row['n_seeds'] != 1 else ''})"
                if not full:
                    ours += f", {len(tasks)} of {len(bench.tasks)} tasks"
            cfg = data["config"]
            backbone = cfg.get("backbone") or "mlp"
            network = _NETWORK_NAMES.get(backbone, backbone)  # the name compare's own tables print
            recipes.append(f"`{bench_name}`: {cfg.get('steps')} steps, batch {cfg.get('batch_size')}, "
                           f"{cfg.get('optimizer')} lr {cfg.get('lr')}, {network} "
                           + " → ".join(str(h) for h in (cfg.get("hidden") or ()))
                           + f" → bottleneck {cfg.get('bottleneck')}, {cfg.get('seeds')} seed(s)")
        if bench_name in paper:
            value, where = paper[bench_name]
            notes.append(f"{len(notes) + 1}. `{bench_name}` — {where}.")
            theirs = f"{float(value):.1f} [{len(notes)}]"
            diff = f"{ours_value - float(value):+.1f}" if ours_value is not None and full else "—"
        else:
            theirs, diff = "no published number on a matching protocol", "—"
        lines.append(f"| {bench_name} | {ours} | {theirs} | {diff} |")
    out = ["Target accuracy (%) averaged over the benchmark's tasks. adaptlib: mean ± std (population) "
           "over seeds, default hyper-parameters, the benchmark's shared recipe, read at build time "
           f"from `{_rel(folder)}/<benchmark>/results.json` (written by `adaptlib compare <benchmark> "
           f"--output {_rel(folder)}/<benchmark>`). Paper: the paper's own number where its protocol "
           "matches the benchmark's (same tasks, features and split); the difference is shown only "
           "when adaptlib's run covered every task.", "", *lines, ""]
    if notes:
        out += ["Where the paper's numbers come from, and how their protocol differs:", "", *notes, ""]
    if recipes:
        out += ["Settings of the committed runs: " + "; ".join(recipes) + ".", ""]
    return "\n".join(out)


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
           *([f"Reads source data: **only in its source phase** (`reads_source`); afterwards the Trainer drops "
              f"its source stream and the method adapts from target data alone."]
             if "reads_source" in vars(cls) else []),
           "", "## Objective", "", objective_section(name),
           "## Algorithm", "",
           f"::: adaptlib.methods.{cls.__name__}",
           "    options:",
           "      show_root_heading: false",
           "      members: false",
           "", "## Loss terms", ""]
    from adaptlib.methods import Method

    if cls.phases is not Method.phases:  # a multi-phase step (MCD)
        out += ["Each step has several phases (see the algorithm above); the Trainer sums the terms of one "
                "phase (each already weighted) and does that phase's backward pass and optimizer step, then "
                "moves to the next phase. `history.train` logs each term as `<phase>/<term>`:", ""]
    else:
        out += ["The Trainer sums these terms (each already weighted) and does the backward pass; "
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
    from adaptlib.compare import METHOD_DEFAULTS

    own = {bench: hp for bench, per in METHOD_DEFAULTS.items() for m, hp in per.items() if m == name}
    if own:  # the benchmarks where DEV chose another value than the paper's (docs/methods.md, rule 3)
        out += ["", "Benchmarks with their own default, chosen without target labels by DEV "
                "([how](../methods.md#how-the-defaults-are-chosen-and-which-still-are-not)); `adaptlib compare` "
                "and a study's configuration 0 train it there:", ""]
        out += [f"- `{bench}`: " + ", ".join(f"`{k}={_fmt(v)}`" for k, v in hp.items())
                + f" ([DEV's table](../defaults/{bench}-{name}-{next(iter(hp))}.md))" for bench, hp in own.items()]
    out += ["", "## Reproduction", "", reproduction_section(name),
            "### Earlier measurements", "", _results_section(name),
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
    body = re.sub(r"\[([^\]]+)\]\((?!https?:|surf-study/|selection-study-surf/|selection-study-amazon/|results-earlier)([^)]+)\)",
                  lambda mm: mm.group(1) if mm.group(1).strip("`") == mm.group(2) else f"{mm.group(1)} (`{mm.group(2)}`)",
                  body)
    body = re.sub(r"^### ", "## ", body, flags=re.M)
    # GitHub starts a list right after a paragraph line; Python-Markdown needs a blank line.
    body = re.sub(r"^(?![-*\s|])(.+)\n(?=[-*] )", r"\1\n\n", body, flags=re.M)
    figures = ("\n## Figures of the SURF selection study\n\n"
               "![accuracy against training step](selection-study-surf/accuracy_vs_step.png)\n\n"
               "![per-task accuracy](selection-study-surf/per_task_office-caltech10-surf.png)\n\n"
               "The complete study reports (every validator, pairwise tests, per-task tables): "
               "[SURF](selection-study-surf/report.md), [Amazon](selection-study-amazon/report.md); "
               "the earlier, larger SURF study (old recipe): [report](surf-study/report.md).\n")
    return ("# Results\n\n*Generated from the `## Results` section of the README at build time.*\n"
            + body + figures + committed_tables())


def committed_tables(results_dir: Optional[Path] = None) -> str:
    """The ``table.md`` of each committed comparison (``docs/results/<benchmark>/``), or a line
    saying that none is committed yet."""
    from adaptlib.datasets import BENCHMARKS

    folder = Path(results_dir if results_dir is not None else RESULTS_DIR)
    parts = []
    for bench_name in BENCHMARKS:
        table = folder / bench_name / "table.md"
        if table.is_file():
            parts.append(f"### {bench_name}\n\n`adaptlib compare {bench_name} --output {_rel(folder / bench_name)}`:"
                         f"\n\n{table.read_text(encoding='utf-8').strip()}\n")
    head = "\n## Committed comparisons\n\n"
    if not parts:
        return (head + f"None yet: the comparisons with the current recipes will be committed into "
                f"`{_rel(folder)}/<benchmark>/` (the method pages read them too).\n")
    return head + "\n".join(parts)


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
    # The committed comparisons' table.md are shown on the results page, not as pages of their own.
    for f in list(files):
        if f.src_uri.startswith("results/") and f.src_uri.endswith("/table.md"):
            files.remove(f)
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
    missing = reference_gaps(site)
    if missing:
        raise PluginError("public names missing from the API reference: " + ", ".join(missing))


def reference_gaps(site: Path) -> List[str]:
    """``module.name (page ...)`` for each name of a :data:`REFERENCE` module's ``__all__`` that
    no page of the built ``site`` documents: its anchor (``id="module.name"``, or the module
    that defines it) is on the module's page, or the same object is documented on another
    reference page (e.g. ``adaptlib.trainer.Trainer`` on the ``adaptlib`` page)."""
    import importlib

    _use_this_checkout()
    pending = []
    documented = set()
    for module, page in REFERENCE.items():
        html = (site / page / "index.html").read_text(encoding="utf-8")
        mod = importlib.import_module(module)
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            home = getattr(obj, "__module__", module)  # functions shadowing their module: rendered from it
            if (name == "__version__" or inspect.ismodule(obj) or f'id="{module}.{name}"' in html
                    or f'id="{home}.{name}"' in html):
                documented.add(id(obj))
            else:
                pending.append((module, name, page, obj))
    return [f"{module}.{name} (page {page})" for module, name, page, obj in pending
            if id(obj) not in documented or isinstance(obj, (int, float, str))]


def public_modules() -> List[str]:
    """adaptlib and every public (no ``_`` in the path) package or top-level module of it that
    declares ``__all__``: what the API reference must cover (the modules inside a subpackage
    are reached through the subpackage's own ``__all__``)."""
    import importlib
    import pkgutil

    _use_this_checkout()
    import adaptlib

    out = ["adaptlib"]
    for info in pkgutil.iter_modules(adaptlib.__path__, "adaptlib."):
        if info.name.rpartition(".")[2].startswith("_") or info.name == "adaptlib.cli":
            continue
        if hasattr(importlib.import_module(info.name), "__all__"):
            out.append(info.name)
    return out
