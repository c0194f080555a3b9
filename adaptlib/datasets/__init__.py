"""Domain-adaptation benchmark data: loaders, benchmark/task definitions, and file fetching.

Data is looked for under :func:`data_root` (``root=`` argument, else ``$ADAPTLIB_DATA``, else
``$XDG_CACHE_HOME/adaptlib`` or ``~/.cache/adaptlib``) with the layout of the project's
``shared/data`` folder; every file is sha256-checked once per process. Missing files raise
:class:`DatasetNotFoundError` unless ``download=True`` is passed (or :func:`download` is run).

Quick start::

    from adaptlib.datasets import get_benchmark
    task = get_benchmark("office-caltech10-surf").load("C->A")
    task.source.x.shape, task.target_test.y.shape   # (1123, 800), (958,)

Your own domains (a folder of ``<domain>_X.npy``/``<domain>_y.npy`` pairs, CSV files or image
folders) are a benchmark too: ``get_benchmark("folder:/path/to/domains")``
(:mod:`adaptlib.datasets.folders`).

Each loader's docstring gives its shapes, dtypes, preprocessing and the papers to cite. The text
benchmarks (``amazon-reviews-text``, ``amazon-reviews-text-finetune``) need the ``text`` extra
(``pip install -e ".[text]"``); their frozen embeddings are cached under
:func:`embedding_cache_dir`.
"""
from ._files import (
    ChecksumError,
    DatasetNotFoundError,
    Domain,
    DownloadError,
    data_root,
    download,
    fetch,
)
from .amazon_reviews import load_amazon_reviews
from .amazon_reviews_msda import load_amazon_reviews_msda
from .amazon_reviews_text import (load_amazon_reviews_text, load_amazon_reviews_text_embeddings,
                                  load_amazon_reviews_text_tokens)
from .benchmarks import BENCHMARKS, Benchmark, TransferTask, folder_benchmark, get_benchmark
from .digit_images import load_digit_images
from .digits import load_mnist_usps_jda
from .folders import folder_spec, load_folder_domains
from .office_caltech import load_office_caltech10_surf
from .text import TextDomain, cached_text_embeddings, embedding_cache_dir

__all__ = [
    "data_root",
    "fetch",
    "download",
    "Domain",
    "TransferTask",
    "Benchmark",
    "BENCHMARKS",
    "get_benchmark",
    "load_office_caltech10_surf",
    "load_mnist_usps_jda",
    "load_digit_images",
    "load_amazon_reviews",
    "load_amazon_reviews_msda",
    "load_folder_domains",
    "folder_spec",
    "folder_benchmark",
    "load_amazon_reviews_text",
    "load_amazon_reviews_text_embeddings",
    "load_amazon_reviews_text_tokens",
    "TextDomain",
    "cached_text_embeddings",
    "embedding_cache_dir",
    "DatasetNotFoundError",
    "ChecksumError",
    "DownloadError",
]
