"""The user's own domains as a benchmark: a folder of NumPy arrays, CSV files or image folders.

One folder holds several labelled domains, in one of three layouts (``format``):

* ``"npy"``: one pair of files per domain, ``<domain>_X.npy`` (``(N, D)`` numbers; ``(N, ...)``
  arrays such as images ``(N, H, W)`` are flattened to ``(N, D)``) and ``<domain>_y.npy``
  (``(N,)`` labels: integers, or strings). Read with ``numpy.load(..., allow_pickle=False)``:
  object arrays (pickles) are refused, so loading never runs code from a file.
* ``"csv"``: one ``<domain>.csv`` per domain, a header row, one sample per row; the column
  ``label_column`` (default ``"label"``) holds the labels (numbers or text), every other
  column a numeric feature. Read with the standard library's :mod:`csv`.
* ``"images"``: one sub-folder per domain, laid out as ``torchvision.datasets.ImageFolder``
  expects: ``<domain>/<class>/<image file>``. Images are decoded with Pillow, converted to
  ``image_mode`` (``"RGB"`` or ``"L"``, grey), resized to ``image_size x image_size`` when it
  is given (bilinear), scaled to [0, 1] and flattened: ``D = image_size**2 * channels``, in
  ``(channel, row, column)`` order as ``ToTensor()`` would give. (torchvision itself is not
  used: its PyPI wheel for torch 2.13.0 is built against the CUDA torch and does not import
  with the CPU build this project is tested on.)

``format="auto"`` picks ``npy`` when the folder holds ``*_X.npy`` files, else ``csv`` when it
holds ``*.csv`` files, else ``images`` when it holds sub-folders.

Classes are the union of the label values of all domains, sorted (numbers numerically,
strings alphabetically), so one class has the same index in every domain even when a domain
lacks it. ``standardize="domain"`` z-scores each feature within each domain (population std,
constant features left at 0), the per-domain preprocessing of the GFK/JDA SURF protocol;
``"none"`` (default) keeps the values as stored.

The benchmark (:func:`adaptlib.datasets.benchmarks.folder_benchmark`): the tasks are all
ordered pairs of distinct domains, ``"<source>-><target>"``, under the transductive protocol
of the built-in benchmarks (Gong et al., CVPR 2012): all labelled source samples, all target
samples used unlabelled for adaptation, and accuracy on all target samples. Every domain therefore needs its labels (the target's only for scoring).

A benchmark is named by a *spec* string, ``"folder:<path>"``, optionally followed by
``?format=csv&label_column=y&image_size=32&image_mode=L&standardize=domain``; this is the
name :func:`adaptlib.datasets.get_benchmark`, ``adaptlib compare``, study files and the
results use (:func:`folder_spec` builds one).
"""
from __future__ import annotations

import csv
import functools
import urllib.parse
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from ._files import Domain, PathLike

__all__ = ["FOLDER_PREFIX", "FOLDER_FORMATS", "IMAGE_EXTENSIONS", "folder_spec", "parse_folder_spec",
           "load_folder_domains"]

#: The prefix of a folder benchmark's name.
FOLDER_PREFIX = "folder:"
#: The folder layouts :func:`load_folder_domains` reads.
FOLDER_FORMATS = ("npy", "csv", "images")
#: Image file endings read in ``"images"`` folders (those of ``torchvision.datasets.ImageFolder``).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_DEFAULTS: Dict[str, Any] = {"format": "auto", "label_column": "label", "image_size": None, "image_mode": "RGB",
                             "standardize": "none"}


def _check_options(format: str, label_column: str, image_size: Optional[int], image_mode: str,
                   standardize: str) -> None:
    if format not in ("auto",) + FOLDER_FORMATS:
        raise ValueError(f"format must be one of {['auto', *FOLDER_FORMATS]}, got {format!r}")
    if not isinstance(label_column, str) or not label_column:
        raise ValueError(f"label_column must be a non-empty column name, got {label_column!r}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size must be a positive integer or None, got {image_size!r}")
    if image_mode not in ("RGB", "L"):
        raise ValueError(f"image_mode must be 'RGB' or 'L', got {image_mode!r}")
    if standardize not in ("none", "domain"):
        raise ValueError(f"standardize must be 'none' or 'domain', got {standardize!r}")


def folder_spec(path: PathLike, *, format: str = "auto", label_column: str = "label",
                image_size: Optional[int] = None, image_mode: str = "RGB", standardize: str = "none") -> str:
    """The benchmark name of the domains in folder ``path``: ``"folder:<absolute path>[?options]"``.

    Only options that differ from their defaults are written, in a fixed order, so one folder
    read one way has one name. Arguments as :func:`load_folder_domains`.

    Raises:
        ValueError: a bad option (named).
    """
    _check_options(format, label_column, image_size, image_mode, standardize)
    given = {"format": format, "label_column": label_column, "image_size": image_size, "image_mode": image_mode,
             "standardize": standardize}
    query = urllib.parse.urlencode({k: v for k, v in given.items() if v != _DEFAULTS[k]})
    return FOLDER_PREFIX + str(Path(path).expanduser().resolve()) + (f"?{query}" if query else "")


def parse_folder_spec(spec: str) -> Tuple[Path, Dict[str, Any]]:
    """``(path, options)`` of a ``"folder:<path>[?key=value&...]"`` benchmark name.

    Raises:
        ValueError: ``spec`` does not start with ``folder:``, names no path, or holds an unknown
            or bad option (the message lists the known ones).
    """
    if not isinstance(spec, str) or not spec.startswith(FOLDER_PREFIX):
        raise ValueError(f"a folder benchmark is named 'folder:<path>', got {spec!r}")
    body = spec[len(FOLDER_PREFIX):]
    path, _, query = body.partition("?")
    if not path:
        raise ValueError(f"folder benchmark {spec!r} names no folder: write 'folder:<path>'")
    options = dict(_DEFAULTS)
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        if key not in _DEFAULTS:
            raise ValueError(f"folder benchmark {spec!r}: unknown option {key!r}; known are {sorted(_DEFAULTS)}")
        if key == "image_size":
            try:
                options[key] = int(value)
            except ValueError:
                raise ValueError(f"folder benchmark {spec!r}: image_size must be an integer, got {value!r}") from None
        else:
            options[key] = value
    _check_options(**options)
    return Path(path).expanduser(), options


def _detect(root: Path) -> str:
    if any(root.glob("*_X.npy")):
        return "npy"
    if any(root.glob("*.csv")):
        return "csv"
    if any(p.is_dir() for p in root.iterdir()):
        return "images"
    raise ValueError(f"{root} holds no domains: expected <domain>_X.npy and <domain>_y.npy files, <domain>.csv "
                     f"files, or one image folder per domain (<domain>/<class>/<image>)")


def _check_domain_name(name: str, where: Path) -> str:
    if not name or "->" in name or "," in name or "?" in name:
        raise ValueError(f"{where}: domain name {name!r} must be non-empty and must not contain '->', ',' or '?' "
                         f"(they separate task and option names); rename the file or folder")
    return name


def _read_npy(root: Path) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    out = {}
    for xf in sorted(root.glob("*_X.npy")):
        name = _check_domain_name(xf.name[: -len("_X.npy")], xf)
        yf = root / f"{name}_y.npy"
        if not yf.is_file():
            raise FileNotFoundError(f"{xf} has no labels: expected {yf} beside it (every domain needs its labels; "
                                    f"the target's are only used to score)")
        try:
            x, y = np.load(xf, allow_pickle=False), np.load(yf, allow_pickle=False)
        except ValueError as e:  # object arrays are pickles
            raise ValueError(f"{xf.name}/{yf.name}: {e}; save plain numeric (or string) arrays") from None
        if x.ndim < 2 or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise ValueError(f"{xf}: features must be a numeric array (N, D) (or (N, ...), flattened), got "
                             f"dtype {x.dtype} shape {x.shape}")
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"{yf}: labels must have shape ({x.shape[0]},) to match {xf.name}, got {y.shape}")
        out[name] = (x.reshape(x.shape[0], -1), y)
    return out


def _read_csv(root: Path, label_column: str) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    out = {}
    for f in sorted(root.glob("*.csv")):
        name = _check_domain_name(f.stem, f)
        with open(f, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        if not rows:
            raise ValueError(f"{f} is empty: expected a header row and one row per sample")
        header = [h.strip() for h in rows[0]]
        if label_column not in header:
            raise ValueError(f"{f}: no label column {label_column!r} in the header {header}; name it with "
                             f"label_column= (--label-column)")
        li = header.index(label_column)
        labels, feats = [], []
        for line, row in enumerate(rows[1:], start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise ValueError(f"{f}, line {line}: {len(row)} values, the header has {len(header)} columns")
            labels.append(row[li].strip())
            try:
                feats.append([float(v) for i, v in enumerate(row) if i != li])
            except ValueError:
                bad = next(header[i] for i, v in enumerate(row) if i != li and not _is_number(v))
                raise ValueError(f"{f}, line {line}: column {bad!r} is not a number; every column but the label "
                                 f"column {label_column!r} must be numeric") from None
        if not labels:
            raise ValueError(f"{f} has a header but no sample rows")
        y = np.asarray([int(v) for v in labels]) if all(_is_int(v) for v in labels) else np.asarray(labels)
        out[name] = (np.asarray(feats, dtype=np.float64).reshape(len(labels), -1), y)
    return out


def _is_number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def _is_int(v: str) -> bool:
    try:
        int(v)
        return True
    except ValueError:
        return False


def _read_images(root: Path, image_size: Optional[int], image_mode: str) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with the 'images' extra
        raise ImportError("reading image folders needs Pillow: pip install 'adaptlib[images]'") from None
    out = {}
    for dom in sorted(p for p in root.iterdir() if p.is_dir()):
        name = _check_domain_name(dom.name, dom)
        xs: List[np.ndarray] = []
        ys: List[str] = []
        for cls in sorted(p for p in dom.iterdir() if p.is_dir()):
            for f in sorted(p for p in cls.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()):
                with Image.open(f) as im:
                    im = im.convert(image_mode)
                    if image_size is not None and im.size != (image_size, image_size):
                        im = im.resize((image_size, image_size), Image.Resampling.BILINEAR)
                    arr = np.asarray(im, dtype=np.float32) / 255.0
                if xs and arr.shape != xs[0].shape:
                    raise ValueError(f"{f} is {arr.shape[1]}x{arr.shape[0]} pixels, the first image of {dom} "
                                     f"{xs[0].shape[1]}x{xs[0].shape[0]}: give image_size= (--image-size) to resize "
                                     f"every image to one size")
                xs.append(arr)
                ys.append(cls.name)
        if not xs:
            raise ValueError(f"{dom} holds no images: expected {dom}/<class>/<image> with one of {IMAGE_EXTENSIONS}")
        x = np.stack(xs)
        if x.ndim == 4:  # (N, H, W, C) -> (N, C, H, W), ToTensor's order
            x = x.transpose(0, 3, 1, 2)
        out[name] = (x.reshape(x.shape[0], -1), np.asarray(ys))
    return out


@functools.lru_cache(maxsize=8)
def _load_cached(root: str, stamp: Tuple[Tuple[str, float], ...], format: str, label_column: str,
                 image_size: Optional[int], image_mode: str, standardize: str):
    path = Path(root)
    fmt = _detect(path) if format == "auto" else format
    if fmt == "npy":
        raw = _read_npy(path)
    elif fmt == "csv":
        raw = _read_csv(path, label_column)
    else:
        raw = _read_images(path, image_size, image_mode)
    if len(raw) < 2:
        raise ValueError(f"{path} holds {len(raw)} domain(s) in the {fmt!r} layout ({sorted(raw)}); domain "
                         f"adaptation needs at least two")
    dims = {name: x.shape[1] for name, (x, _) in raw.items()}
    if len(set(dims.values())) != 1:
        raise ValueError(f"{path}: the domains have different feature dimensions {dims}; every domain needs the "
                         f"same features" + (" (give image_size= to resize images to one size)"
                                             if fmt == "images" else ""))
    from ..labels import encode_labels

    values: List[Any] = []
    for _, y in raw.values():
        values.extend(y.tolist())
    _, classes = encode_labels(values)
    out = {}
    for name, (x, y) in raw.items():
        codes, _ = encode_labels(y.tolist(), classes=classes)
        x = x.astype(np.float64)
        if not np.isfinite(x).all():
            raise ValueError(f"{path}: domain {name!r} has NaN or inf features; fill or drop them first")
        if standardize == "domain":
            std = x.std(axis=0)
            x = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
        x = x.astype(np.float32)
        x.flags.writeable = False
        out[name] = (x, codes.numpy())
    return fmt, tuple(str(c) for c in classes), out


def load_folder_domains(path: PathLike, *, format: str = "auto", label_column: str = "label",
                        image_size: Optional[int] = None, image_mode: str = "RGB",
                        standardize: str = "none") -> Dict[str, Domain]:
    """The labelled domains stored in folder ``path`` (layouts in the module docstring).

    Args:
        path: the folder.
        format: ``"auto"``, ``"npy"``, ``"csv"`` or ``"images"``.
        label_column: the label column of CSV files.
        image_size: resize images to ``image_size x image_size`` pixels (``None``: keep their
            size, which must then be the same for all).
        image_mode: ``"RGB"`` (3 channels) or ``"L"`` (grey, 1 channel).
        standardize: ``"none"`` or ``"domain"`` (z-score each feature within each domain).

    Returns:
        Domain name -> :class:`~adaptlib.datasets.Domain` (``x`` float32 ``(N, D)``, ``y`` int64
        in ``0..C-1``, ``classes`` the shared class names as strings), in name order. Files are
        parsed once per process (while unchanged); each call returns fresh tensors.

    Raises:
        FileNotFoundError: ``path`` is not a folder, or a ``_X.npy`` file lacks its ``_y.npy``.
        ValueError: fewer than two domains, domains with different feature dimensions, a
            non-numeric feature, a missing label column, NaN/inf features, pickled ``.npy``
            files, a domain name holding ``->``, ``,`` or ``?``, or a bad option (each named).
        ImportError: an image folder without Pillow installed.
    """
    _check_options(format, label_column, image_size, image_mode, standardize)
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"no folder at {root} (the domains of a folder benchmark)")
    stamp = tuple(sorted((str(p), p.stat().st_mtime) for p in root.rglob("*") if p.is_file()))
    _, classes, arrays = _load_cached(str(root), stamp, format, label_column, image_size, image_mode, standardize)
    return {name: Domain(name, torch.from_numpy(x.copy()), torch.from_numpy(y.copy()), classes)
            for name, (x, y) in arrays.items()}
