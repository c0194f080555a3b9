"""Domain-adaptation benchmark data: loaders, benchmark/task definitions, and file fetching.

Data is looked for under :func:`data_root` (``root=`` argument, else ``$ADAPTLIB_DATA``, else
``$XDG_CACHE_HOME/adaptlib`` or ``~/.cache/adaptlib``) with the layout of the project's
``shared/data`` folder; every file is sha256-checked once per process. Missing files raise
:class:`DatasetNotFoundError` unless ``download=True`` is passed (or :func:`download` is run).

Quick start::

    from adaptlib.datasets import get_benchmark
    task = get_benchmark("office-caltech10-surf").load("C->A")
    task.source.x.shape, task.target_test.y.shape   # (1123, 800), (958,)

Each loader's docstring gives its shapes, dtypes, preprocessing and the papers to cite.
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
from .benchmarks import BENCHMARKS, Benchmark, TransferTask, get_benchmark
from .digit_images import load_digit_images
from .digits import load_mnist_usps_jda
from .office_caltech import load_office_caltech10_surf

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
    "DatasetNotFoundError",
    "ChecksumError",
    "DownloadError",
]
