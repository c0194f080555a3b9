"""Choose the shared training recipe of a benchmark on held-out *source* data, without any target label.

For a benchmark, every source domain of its tasks is split per class into 80 % training and
20 % validation samples (a fixed split, the same for every recipe). Each candidate recipe
of a small grid trains the ``source-only`` method on the 80 % of one domain, with the
network, optimizer, schedule, budget, loss and preprocessing it names (built exactly as
``adaptlib compare`` builds them: :func:`adaptlib.compare.build_model` and
:func:`adaptlib.compare.build_trainer`), and is scored by its accuracy on that domain's
20 %. Recipes are ranked by the mean over the source domains (and seeds) of that held-out
source accuracy.

The grid (:func:`candidates`) is one-at-a-time around a centre recipe (Adam 1e-3, constant
learning rate, MLP 256 with dropout 0.5, a 128-d bottleneck with BatchNorm, 1000 steps of
batch 32), plus the pre-issue-10 settings (``old``) and the plain hand-written loop
(``hand-written``: the same MLP and optimizer without a bottleneck). A second stage then
combines, per factor, the best single change that beat the centre (``combined``) and
scores it too, when it holds at least two changes. A third stage (``--confirm-top K
--confirm-seeds S``) trains the K best recipes again with seeds ``1..S-1`` and ranks those K
by their mean over all S seeds: with one seed the held-out sets are small (31 DSLR images on
SURF) and single-seed differences of a point are noise. The chosen recipe is the best of
the last stage, except that the cheapest recipe (steps x batch x parameters) within
``--tolerance`` points of the best is preferred. A fourth stage (``--halve-budget``) trains
that choice again with half its steps on the same seeds and keeps the cheaper of the two by
the same rule (a comparison trains every method on every task and seed with this budget).
``--reuse`` takes finished runs (same
recipe settings, domain and seed) from an earlier ``<out>/<benchmark>.json``.

No target label is read: only the source domains' files (and for Amazon only the
``train`` split, the labelled source split of the DANN protocol) are loaded, through the
per-domain loaders; for MNIST-USPS, whose files hold both domains, the target half the
loader returns is dropped at once, unread. :func:`load_source_domains` asserts it. The one
exception to "source files only" is ``amazon-reviews-msda``, whose representation is fitted on
the unlabelled reviews of both domains of a task (as every method of that task sees it); a
fit on a cold cache opens both domains' files, and the target splits the loader returns are
dropped unread.

``digits-images`` (LeNet on 28x28 images, minutes per run on the CPU) has its own tiny grid
(:data:`SMALL_GRIDS`): its centre and one change per factor (two strengths of random affine
augmentation), no baselines. Augmentation acts on the training images only; the held-out
images are scored as they are. So has ``amazon-reviews-msda`` (30,000-d inputs, minutes per
run): its first benchmark recipe (mSDA noise 0.5) against ``log1p`` of the counts block and
against noise 0.3 and 0.7 (new layer fits); each source domain is the source split of the first
task it starts (``B`` of ``B->D``), in that task's mSDA layers.

Usage (about 2-10 min per benchmark on 2 cores)::

    ADAPTLIB_DATA=/work/shared/data python scripts/select_recipe.py office-caltech10-surf --seeds 2 --workers 2
    python scripts/select_recipe.py mnist-usps-jda --seeds 2 --workers 2
    python scripts/select_recipe.py amazon-reviews --seeds 1 --workers 2
    python scripts/select_recipe.py amazon-reviews-text --seeds 2 --workers 2
    python scripts/select_recipe.py amazon-reviews-msda --seeds 1 --confirm-top 2 --confirm-seeds 2 \
        --workers 2   # about 30 min on an idle machine: 24 runs of about 90 s, 9 layer fits

For ``amazon-reviews-text`` (frozen all-MiniLM-L6-v2 embeddings, cached) there is no ``old``
recipe; each domain's 2000 labelled reviews are its source data (the benchmark has no separate
test split), and the same 80/20 split is used.

It prints one line per recipe as it finishes, the ranked table (Markdown) and the choice,
and writes ``<out>/<benchmark>.json`` (every run) and ``<out>/<benchmark>.md`` (the table).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from adaptlib.compare import CompareConfig, _init_worker, build_model, build_trainer  # noqa: E402
from adaptlib.datasets import get_benchmark  # noqa: E402
from adaptlib.datasets._files import Domain  # noqa: E402

VAL_FRACTION = 0.2
SPLIT_SEED = 20240610

#: The recipe every benchmark had before issue 10 (compare.BENCHMARK_SETTINGS at main f32841b).
OLD: Dict[str, Dict[str, Any]] = {
    "office-caltech10-surf": dict(hidden=(128,), bottleneck=64, dropout=0.5, bottleneck_norm=False, steps=1500,
                                  batch_size=32, optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4,
                                  lr_schedule="inv", label_smoothing=0.0, load_options={}),
    "mnist-usps-jda": dict(hidden=(128,), bottleneck=64, dropout=0.5, bottleneck_norm=False, steps=1500,
                           batch_size=32, optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4,
                           lr_schedule="inv", label_smoothing=0.0, load_options={"normalize": None}),
    "amazon-reviews": dict(hidden=(64,), bottleneck=32, dropout=0.5, bottleneck_norm=False, steps=600,
                           batch_size=64, optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4,
                           lr_schedule="inv", label_smoothing=0.0, load_options={}),
}

#: The centre of the grid (the loader options are the benchmark's old ones).
CENTRE: Dict[str, Any] = dict(hidden=(256,), bottleneck=128, dropout=0.5, bottleneck_norm=True, steps=1000,
                              batch_size=32, optimizer="adam", lr=1e-3, momentum=0.9, weight_decay=0.0,
                              lr_schedule="constant", label_smoothing=0.0)

#: Input preprocessing tried per benchmark (loader options; the old one is the centre's).
PREPROCESSING: Dict[str, Tuple[Tuple[str, Dict[str, Any]], ...]] = {
    "office-caltech10-surf": (("sqrt-zscore", {"preprocess": "sqrt-zscore"}),),
    "mnist-usps-jda": (("l2", {"normalize": "l2"}),),
    "amazon-reviews": (("log1p", {"transform": "log1p"}),),
    "amazon-reviews-text": (),  # unit-norm sentence embeddings: nothing to transform
}

#: One-at-a-time changes to the centre, grouped by factor (the combined stage takes the best per factor).
CHANGES: Tuple[Tuple[str, str, Dict[str, Any]], ...] = (
    # (factor, name, overrides of the centre)
    ("norm", "no-bn", dict(bottleneck_norm=False)),
    ("optimizer", "lr3e-4", dict(lr=3e-4)),
    ("optimizer", "lr3e-3", dict(lr=3e-3)),
    ("optimizer", "adamw", dict(optimizer="adamw", weight_decay=1e-2)),
    ("optimizer", "sgd", dict(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, lr_schedule="inv")),
    ("schedule", "cosine", dict(lr_schedule="cosine")),
    ("smoothing", "ls0.1", dict(label_smoothing=0.1)),
    ("steps", "steps2000", dict(steps=2000)),
    ("batch", "batch64", dict(batch_size=64)),
    ("width", "hidden512", dict(hidden=(512,))),
    ("dropout", "dropout0.2", dict(dropout=0.2)),
)


#: Changes tried on one benchmark only (beside CHANGES): shorter budgets for the small 384-d
#: sentence embeddings, where 1000 steps of batch 32 are 16 epochs of a source domain.
EXTRA_CHANGES: Dict[str, Tuple[Tuple[str, str, Dict[str, Any]], ...]] = {
    "amazon-reviews-text": (("steps", "steps500", dict(steps=500)),),
    # The JDA features are 16x16 grey images (one column per image): ADDA's LeNet reads them as
    # images (its fully connected width 500; two 5x5 convolutions and poolings leave 50x1x1).
    "mnist-usps-jda": (("backbone", "lenet", dict(backbone="lenet", hidden=(500,))),),
}

#: Image benchmarks trained from scratch by a CNN: their own, tiny grid (each run costs minutes on
#: the CPU). The centre is ADDA's LeNet (Tzeng et al., CVPR 2017) under the MLP centre's optimizer
#: with a cosine schedule; one change per factor.
SMALL_GRIDS: Dict[str, Tuple[Dict[str, Any], Tuple[Tuple[str, str, Dict[str, Any]], ...]]] = {
    "digits-images": (
        dict(backbone="lenet", hidden=(500,), bottleneck=256, dropout=0.5, bottleneck_norm=True, steps=1000,
             batch_size=32, optimizer="adam", lr=1e-3, momentum=0.9, weight_decay=0.0, lr_schedule="cosine",
             label_smoothing=0.0, load_options={}, augment={}),  # none: not the benchmark's default
        (("norm", "no-bn", dict(bottleneck_norm=False)),
         ("optimizer", "lr3e-4", dict(lr=3e-4)),
         # Random affine augmentation of the training images (RandomAffine; the centre has none): the
         # usual MNIST setting (torchvision-style degrees 10, shifts 10 %, scale 0.9-1.1), and twice it.
         ("augment", "affine", dict(augment=dict(degrees=10, translate=0.1, scale=[0.9, 1.1]))),
         ("augment", "affine-strong", dict(augment=dict(degrees=20, translate=0.2, scale=[0.8, 1.2])))),
    ),
    # Amazon in the mSDA representation (30,000-d, the layers fitted on the task's unlabelled
    # reviews of both domains): each run costs minutes, so the centre is the benchmark's first
    # recipe (amazon-reviews' chosen recipe with the counts block as Chen et al. concatenate it,
    # the loader's noise 0.5), and the changes are the rest of amazon-reviews' recipe (log1p of the
    # counts block) and two other corruption probabilities. The benchmark's recipe is now the
    # grid's choice, noise 0.3 (docs/recipe.md); the centre stays as it ran, the record of the grid.
    "amazon-reviews-msda": (
        dict(hidden=(256,), bottleneck=128, dropout=0.5, bottleneck_norm=True, steps=2000, batch_size=64,
             optimizer="adam", lr=3e-4, momentum=0.9, weight_decay=0.0, lr_schedule="cosine",
             label_smoothing=0.1, load_options={"layer_input": "presence"}, augment={}),
        (("preprocessing", "log1p", dict(load_options={"layer_input": "presence", "transform": "log1p"})),
         # Chen et al. (ICML 2012) choose the corruption probability on the source domain; the
         # centre's 0.5 (the module's default) against 0.3 and 0.7, each with its own layer fits.
         ("noise", "noise0.3", dict(load_options={"layer_input": "presence", "noise": 0.3})),
         ("noise", "noise0.7", dict(load_options={"layer_input": "presence", "noise": 0.7}))),
    ),
}


def changes_of(benchmark: str) -> Tuple[Tuple[str, str, Dict[str, Any]], ...]:
    """The one-at-a-time changes of ``benchmark``'s grid: ``(factor, name, overrides)``."""
    if benchmark in SMALL_GRIDS:
        return SMALL_GRIDS[benchmark][1]
    return CHANGES + EXTRA_CHANGES.get(benchmark, ())


def candidates(benchmark: str) -> List[Tuple[str, str, Dict[str, Any]]]:
    """The first-stage grid of ``benchmark``: ``(factor, name, full recipe)`` triples."""
    if benchmark in SMALL_GRIDS:
        centre, changes = SMALL_GRIDS[benchmark]
        return [("centre", "centre", dict(centre))] + [(f, n, dict(centre, **c)) for f, n, c in changes]
    centre = dict(CENTRE, load_options=dict(OLD[benchmark]["load_options"]) if benchmark in OLD else {})
    out = [("baseline", "old", dict(OLD[benchmark]))] if benchmark in OLD else []
    out += [("baseline", "hand-written", dict(centre, bottleneck=None, bottleneck_norm=False)),
            ("centre", "centre", centre)]
    for factor, name, change in changes_of(benchmark):
        out.append((factor, name, dict(centre, **change)))
    for name, options in PREPROCESSING[benchmark]:
        out.append(("preprocessing", name, dict(centre, load_options=options)))
    return out


# ---------------------------------------------------------------------------------------- data
def source_domain_names(benchmark: str) -> List[str]:
    """The task-name spelling of every domain that is the source of a task of ``benchmark``."""
    return sorted({task.split("->")[0] for task in get_benchmark(benchmark).tasks})


def load_source_domains(benchmark: str, load_options: Dict[str, Any], root: Optional[str] = None,
                        only: Optional[str] = None) -> Dict[str, Domain]:
    """The labelled source data of every task's source domain (or of ``only``): name -> :class:`Domain`.

    Only source labels are used: Office-Caltech10 and Amazon through their per-domain loaders
    (Amazon's labelled ``train`` split only; its ``test`` split, the DANN protocol's target
    evaluation set, is never opened), MNIST-USPS as the source half of the task's file, Amazon
    text as the cached embeddings of the domain's labelled reviews. Amazon in the mSDA
    representation is the source split of the first task with that source (``B`` of ``B->D``):
    its layers are fitted on the unlabelled reviews of both domains (the representation every
    method of that task sees); the two target splits the loader returns are dropped unread.
    """
    from adaptlib.datasets import amazon_reviews, office_caltech
    from adaptlib.datasets.amazon_reviews import load_amazon_reviews
    from adaptlib.datasets.amazon_reviews_text import load_amazon_reviews_text_embeddings
    from adaptlib.datasets.digit_images import load_digit_images
    from adaptlib.datasets.digits import load_mnist_usps_jda
    from adaptlib.datasets.office_caltech import load_office_caltech10_surf

    bench = get_benchmark(benchmark)
    if only is not None and only not in source_domain_names(benchmark):
        raise ValueError(f"only must be one of the source domains {source_domain_names(benchmark)} of "
                         f"{benchmark!r}, got {only!r}")
    out: Dict[str, Domain] = {}
    for letter in source_domain_names(benchmark):
        if only is not None and letter != only:
            continue
        task = next(t for t in bench.tasks if t.split("->")[0] == letter)  # a task where it is the source
        if benchmark == "office-caltech10-surf":
            name = {v: k for k, v in office_caltech.DOMAIN_LETTERS.items()}[letter]
            out[letter] = load_office_caltech10_surf(name, root, **load_options)
        elif benchmark == "amazon-reviews":
            name = {v: k for k, v in amazon_reviews.DOMAIN_LETTERS.items()}[letter]
            out[letter] = load_amazon_reviews(name, "train", root, **load_options)
        elif benchmark == "amazon-reviews-text":
            name = {v: k for k, v in amazon_reviews.DOMAIN_LETTERS.items()}[letter]
            out[letter] = load_amazon_reviews_text_embeddings(name, root, **load_options)
        elif benchmark == "digits-images":  # one loader per domain: the target domain is not opened
            out[letter] = load_digit_images({"M": "mnist", "U": "usps"}[letter], root, **load_options)
        elif benchmark == "amazon-reviews-msda":
            from adaptlib.datasets.amazon_reviews_msda import load_amazon_reviews_msda
            names = {v: k for k, v in amazon_reviews.DOMAIN_LETTERS.items()}
            source, _target_train, _target_test = load_amazon_reviews_msda(
                *(names[p] for p in task.split("->")), root, **load_options)
            del _target_train, _target_test  # unlabelled inputs of the layers' fit; their labels unused
            out[letter] = source
        elif benchmark == "mnist-usps-jda":
            source, _target = load_mnist_usps_jda(task.lower(), root, **load_options)
            del _target  # the file holds both domains; the target half is never used
            out[letter] = source
        else:
            raise ValueError(f"no source loader for benchmark {benchmark!r}")
        # What we trained and validated on is the source of `task`, nothing else.
        assert out[letter].name.lower().startswith(letter.lower()[0]), (letter, out[letter].name)
        assert letter == task.split("->")[0]
    assert set(out) == ({only} if only is not None else {t.split("->")[0] for t in bench.tasks}), \
        "every domain used is a task's source"
    return out


def holdout_split(y: torch.Tensor, fraction: float = VAL_FRACTION, seed: int = SPLIT_SEED) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per class, ``round(fraction * n_c)`` (at least 1) random indices of ``y`` ``(N,)`` for validation.

    Returns ``(train_idx, val_idx)``, sorted, disjoint, covering ``0..N-1``.
    """
    gen = torch.Generator().manual_seed(seed)
    val = []
    for c in torch.unique(y):
        idx = torch.nonzero(y == c).flatten()
        k = max(1, int(round(fraction * idx.numel())))
        val.append(idx[torch.randperm(idx.numel(), generator=gen)[:k]])
    val_idx = torch.cat(val).sort().values
    mask = torch.ones(y.numel(), dtype=torch.bool)
    mask[val_idx] = False
    return torch.nonzero(mask).flatten(), val_idx


# ---------------------------------------------------------------------------------------- runs
def _config(benchmark: str, recipe: Dict[str, Any], root: Optional[str]) -> CompareConfig:
    return CompareConfig(benchmark=benchmark, methods=("source-only",), seeds=1, workers=1, root=root,
                         **recipe).resolved()


def run_job(job: Tuple[str, str, Dict[str, Any], str, int, Optional[str]]) -> Dict[str, Any]:
    """Train source-only with one recipe on one source domain's 80 %; score on its 20 %."""
    benchmark, name, recipe, domain, seed, root = job
    torch.set_num_threads(1)
    config = _config(benchmark, recipe, root)
    data = load_source_domains(benchmark, dict(config.load_options or {}), root, only=domain)[domain]
    tr, va = holdout_split(data.y, VAL_FRACTION, SPLIT_SEED + sum(map(ord, domain)))
    torch.manual_seed(seed)
    model = build_model(config, data.x.shape[1], get_benchmark(benchmark).num_classes)
    trainer = build_trainer(config, model, "source-only", seed)
    start = time.perf_counter()
    trainer.fit((data.x[tr], data.y[tr]), eval_sets={"val": (data.x[va], data.y[va])})
    seconds = time.perf_counter() - start
    return {"recipe": name, "domain": domain, "seed": seed, "val_accuracy": trainer.history.final_eval()["val/accuracy"],
            "n_train": int(tr.numel()), "n_val": int(va.numel()), "seconds": seconds,
            "cost": config.steps * config.batch_size * sum(p.numel() for p in model.parameters())}


_CACHE: Dict[str, Dict[str, Any]] = {}


def _key(recipe: Dict[str, Any], domain: str, seed: int) -> str:
    # No augmentation is spelled out as augment={} (a missing key would mean the benchmark's default);
    # the key leaves it out, as the records written before the field did.
    recipe = {k: v for k, v in recipe.items() if not (k == "augment" and not v)}
    return json.dumps([recipe, domain, seed], sort_keys=True, default=list)


def run_recipes(benchmark: str, grid: List[Tuple[str, str, Dict[str, Any]]], seeds: int, workers: int,
                root: Optional[str], first_seed: int = 0) -> List[Dict[str, Any]]:
    domains = source_domain_names(benchmark)
    jobs = [(benchmark, name, recipe, d, s, root) for _, name, recipe in grid for d in domains
            for s in range(first_seed, seeds)]
    cached = [dict(_CACHE[_key(j[2], j[3], j[4])], recipe=j[1]) for j in jobs if _key(j[2], j[3], j[4]) in _CACHE]
    jobs = [j for j in jobs if _key(j[2], j[3], j[4]) not in _CACHE]
    jobs.sort(key=lambda j: -j[2]["steps"] * j[2]["batch_size"] * max(j[2]["hidden"]))  # longest first
    need = {name: len(domains) * (seeds - first_seed) for _, name, _ in grid}
    done: Dict[str, List[Dict[str, Any]]] = {}
    records: List[Dict[str, Any]] = []
    start = time.perf_counter()
    recipes = {name: recipe for _, name, recipe in grid}

    def collect(rec: Dict[str, Any]) -> None:
        rec["settings_key"] = _key(recipes[rec["recipe"]], rec["domain"], rec["seed"])
        _CACHE[rec["settings_key"]] = rec
        records.append(rec)
        done.setdefault(rec["recipe"], []).append(rec)
        if len(done[rec["recipe"]]) == need[rec["recipe"]]:
            rs = done[rec["recipe"]]
            print(f"  [{time.perf_counter() - start:6.0f}s] {rec['recipe']:<14} val {100 * _mean(rs):.2f} "
                  f"({statistics.fmean(r['seconds'] for r in rs):.1f}s/run)", flush=True)

    for rec in cached:
        collect(rec)
    if workers <= 1:
        for job in jobs:
            collect(run_job(job))
    else:
        with mp.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
            for rec in pool.imap_unordered(run_job, jobs):
                collect(rec)
            pool.close()
            pool.join()
    return records


def _mean(records: List[Dict[str, Any]]) -> float:
    """Mean over domains of the per-domain mean over seeds."""
    by_domain: Dict[str, List[float]] = {}
    for r in records:
        by_domain.setdefault(r["domain"], []).append(r["val_accuracy"])
    return statistics.fmean(statistics.fmean(v) for v in by_domain.values())


def _seed_std(records: List[Dict[str, Any]]) -> float:
    """Population std over seeds of the domain-mean accuracy (0 with one seed)."""
    seeds = sorted({r["seed"] for r in records})
    per_seed = [_mean([r for r in records if r["seed"] == s]) for s in seeds]
    return statistics.pstdev(per_seed) if len(per_seed) > 1 else 0.0


def summarise(records: List[Dict[str, Any]], recipes: Dict[str, Dict[str, Any]], factors: Dict[str, str]) -> List[Dict[str, Any]]:
    rows = []
    for name in recipes:
        rs = [r for r in records if r["recipe"] == name]
        domains = sorted({r["domain"] for r in rs})
        rows.append({"recipe": name, "factor": factors[name], "mean": _mean(rs), "seed_std": _seed_std(rs),
                     "per_domain": {d: statistics.fmean(r["val_accuracy"] for r in rs if r["domain"] == d)
                                    for d in domains},
                     "seconds_per_run": statistics.fmean(r["seconds"] for r in rs), "cost": rs[0]["cost"],
                     "settings": recipes[name]})
    rows.sort(key=lambda r: -r["mean"])
    return rows


def combine(benchmark: str, rows: List[Dict[str, Any]]) -> Optional[Tuple[List[str], Dict[str, Any]]]:
    """Centre + the best change of every factor that beat the centre; ``None`` with fewer than 2 such changes."""
    by_name = {r["recipe"]: r for r in rows}
    centre = by_name["centre"]
    best: Dict[str, Dict[str, Any]] = {}
    for r in rows:
        if r["factor"] in ("baseline", "centre") or r["mean"] <= centre["mean"]:
            continue
        if r["factor"] not in best or r["mean"] > best[r["factor"]]["mean"]:
            best[r["factor"]] = r
    if len(best) < 2:
        return None
    recipe = dict(centre["settings"])
    names = []
    changes = {name: change for _, name, change in changes_of(benchmark)}
    changes.update({name: {"load_options": opts} for name, opts in PREPROCESSING.get(benchmark, ())})
    options_changed = False
    for factor in sorted(best):
        names.append(best[factor]["recipe"])
        change = dict(changes[best[factor]["recipe"]])
        if "load_options" in change:
            # A change's options replace the centre's; two factors that both change them (mSDA:
            # the transform and the noise) are merged, so the second does not undo the first.
            if options_changed:
                change["load_options"] = {**recipe["load_options"], **change["load_options"]}
            options_changed = True
        recipe.update(change)
    return names, recipe


def choose(rows: List[Dict[str, Any]], tolerance: float) -> Dict[str, Any]:
    """The cheapest recipe whose mean is within ``tolerance`` (a fraction) of the best mean."""
    top = max(r["mean"] for r in rows)
    close = [r for r in rows if r["mean"] >= top - tolerance]
    return min(close, key=lambda r: (r["cost"], -r["mean"]))


def markdown(benchmark: str, rows: List[Dict[str, Any]], chosen: str, seeds: int) -> str:
    domains = list(rows[0]["per_domain"])
    lines = [f"| recipe | change from the centre | mean held-out source acc. (%) | ± seeds | "
             + " | ".join(domains) + " | s/run |", "|---" * (5 + len(domains)) + "|"]
    for r in rows:
        mark = " **(chosen)**" if r["recipe"] == chosen else ""
        lines.append(f"| {r['recipe']}{mark} | {_describe(r)} | {100 * r['mean']:.2f} | {100 * r['seed_std']:.2f} | "
                     + " | ".join(f"{100 * r['per_domain'][d]:.1f}" for d in domains)
                     + f" | {r['seconds_per_run']:.1f} |")
    return "\n".join(lines) + f"\n\n{benchmark}: source-only, {seeds} seed(s), 80/20 per-class split of each source domain.\n"


def _describe(row: Dict[str, Any]) -> str:
    s = row["settings"]
    if row["recipe"] in ("old", "centre", "hand-written", "combined") or row["factor"] == "budget":
        net = f"{'LeNet' if s.get('backbone') == 'lenet' else 'MLP'} {list(s['hidden'])}, drop {s['dropout']}, bottleneck {s['bottleneck']}" + (
            "+BN" if s["bottleneck_norm"] else "")
        opt = f"{s['optimizer']} lr {s['lr']:g} {s['lr_schedule']}, wd {s['weight_decay']:g}"
        aug = f"; augment {s['augment']}" if s.get("augment") else ""
        return f"{net}; {opt}; {s['steps']}x{s['batch_size']}; ls {s['label_smoothing']}; {s['load_options'] or 'default'}{aug}"
    changes = {name: change for name, change in _ALL_CHANGES.items()}
    changes.update({name: change for factor, name, change in sum(EXTRA_CHANGES.values(), ())})
    if row["recipe"] in changes:
        return ", ".join(f"{k}={v}" for k, v in changes[row["recipe"]].items())
    return f"load_options={s['load_options']}"


_ALL_CHANGES = {name: change for _, name, change in CHANGES}
_ALL_CHANGES.update({name: change for _, changes in SMALL_GRIDS.values() for _, name, change in changes})


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("benchmark", choices=sorted(set(PREPROCESSING) | set(SMALL_GRIDS)))
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--tolerance", type=float, default=0.2, help="points (default 0.2)")
    p.add_argument("--root", default=None)
    p.add_argument("--only", default=None, help="comma-separated recipe names (for a quick check)")
    p.add_argument("--confirm-top", type=int, default=0, help="stage 3: re-train the K best recipes")
    p.add_argument("--confirm-seeds", type=int, default=2, help="stage 3: seeds in all (default 2)")
    p.add_argument("--reuse", action="store_true", help="reuse the runs of an earlier <out>/<benchmark>.json")
    p.add_argument("--halve-budget", action="store_true",
                   help="stage 4: train the chosen recipe with half its steps (same seeds); the cheaper one wins "
                        "when within --tolerance")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "recipe")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    previous = args.out / f"{args.benchmark}.json"
    if args.reuse and previous.exists():
        saved = json.loads(previous.read_text())
        settings = {row["recipe"]: row["settings"] for row in saved["summary"]}
        for rec in saved["records"]:
            key = rec.get("settings_key") or _key(settings[rec["recipe"]], rec["domain"], rec["seed"])
            _CACHE[key] = dict(rec, settings_key=key)
        print(f"reusing {len(_CACHE)} runs of {previous}", flush=True)
    grid = candidates(args.benchmark)
    if args.only:
        keep = set(args.only.split(","))
        grid = [g for g in grid if g[1] in keep]
    print(f"{args.benchmark}: {len(grid)} recipes x {len(source_domain_names(args.benchmark))} source domains x "
          f"{args.seeds} seed(s), {args.workers} worker(s)", flush=True)
    records = run_recipes(args.benchmark, grid, args.seeds, args.workers, args.root)
    recipes = {name: recipe for _, name, recipe in grid}
    factors = {name: factor for factor, name, _ in grid}
    rows = summarise(records, recipes, factors)
    combined = combine(args.benchmark, rows) if "centre" in recipes else None
    if combined is not None:
        names, recipe = combined
        print(f"stage 2: combined = centre + {', '.join(names)}", flush=True)
        records += run_recipes(args.benchmark, [("combined", "combined", recipe)], args.seeds, args.workers, args.root)
        recipes["combined"], factors["combined"] = recipe, "combined"
        rows = summarise(records, recipes, factors)
    confirmed: List[str] = []
    if args.confirm_top > 0 and args.confirm_seeds > args.seeds:
        confirmed = [r["recipe"] for r in rows[:args.confirm_top]]
        print(f"stage 3: {', '.join(confirmed)} with seeds {args.seeds}..{args.confirm_seeds - 1}", flush=True)
        records += run_recipes(args.benchmark, [(factors[n], n, recipes[n]) for n in confirmed], args.confirm_seeds,
                               args.workers, args.root, first_seed=args.seeds)
        rows = summarise(records, recipes, factors)
    final = [r for r in rows if r["recipe"] in confirmed] if confirmed else rows
    chosen = choose(final, args.tolerance / 100)
    halved = None
    if args.halve_budget and chosen["settings"]["steps"] >= 2:
        halved = chosen["recipe"] + "-half"
        recipe = dict(chosen["settings"], steps=chosen["settings"]["steps"] // 2)
        seeds_used = max(args.confirm_seeds, args.seeds) if chosen["recipe"] in confirmed else args.seeds
        print(f"stage 4: {halved} ({recipe['steps']} steps) with seeds 0..{seeds_used - 1}", flush=True)
        records += run_recipes(args.benchmark, [("budget", halved, recipe)], seeds_used, args.workers, args.root)
        recipes[halved], factors[halved] = recipe, "budget"
        rows = summarise(records, recipes, factors)
        final = [r for r in rows if r["recipe"] in (chosen["recipe"], halved)]
        chosen = choose(final, args.tolerance / 100)
    table = markdown(args.benchmark, rows, chosen["recipe"], args.seeds)
    if halved is not None:
        table += f"Stage 4: `{halved}` is the stage-3 choice with half its steps, on the same seeds.\n"
    if confirmed:
        table += (f"Stage 3: {', '.join(confirmed)} re-trained with {args.confirm_seeds} seeds in all (their mean and "
                  "± are over those seeds); the choice is among them.\n")
    seconds = time.perf_counter() - t0
    print("\n" + table)
    print(f"chosen: {chosen['recipe']} -> {json.dumps(chosen['settings'], default=list)}")
    print(f"total {seconds:.0f}s")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.benchmark}.md").write_text(table + f"\nChosen: `{chosen['recipe']}` "
                                                   f"`{json.dumps(chosen['settings'], default=list)}`. "
                                                   f"Total {seconds:.0f} s.\n")
    (args.out / f"{args.benchmark}.json").write_text(json.dumps({
        "benchmark": args.benchmark, "seeds": args.seeds, "val_fraction": VAL_FRACTION, "split_seed": SPLIT_SEED,
        "tolerance_points": args.tolerance, "combined": combined[0] if combined else None, "confirmed": confirmed,
        "halved": halved,
        "chosen": chosen["recipe"], "chosen_settings": chosen["settings"], "seconds": seconds,
        "target_labels_used": False, "summary": rows, "records": records}, indent=1, default=list))
    return 0


if __name__ == "__main__":
    sys.exit(main())
