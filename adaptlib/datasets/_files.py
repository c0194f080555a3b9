"""Finding, checking and downloading the data files used by :mod:`adaptlib.datasets`.

Every file a loader reads is listed in :data:`REGISTRY` with its path relative to the data
root (the same layout as the project's ``shared/data`` folder), its sha256, and the pinned
GitHub commit it was copied from. :func:`fetch` returns a verified local path for one file,
:func:`download` fetches every file of a benchmark.

This module also defines :class:`Domain`, the container every loader returns (it lives here so
that the loader modules and :mod:`adaptlib.datasets.benchmarks` can share it without import
cycles).

Where data is looked for (first match wins): the ``root`` argument, the ``ADAPTLIB_DATA``
environment variable, ``$XDG_CACHE_HOME/adaptlib``, ``~/.cache/adaptlib``.
Where it is downloaded from: the ``mirror`` argument, the ``ADAPTLIB_MIRROR`` environment
variable, else each file's pinned ``raw.githubusercontent.com`` URL. A mirror is a base URL
under which files sit at their relative paths, e.g. ``{mirror}/office_caltech10_surf/dslr_SURF_L10.mat``.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shlex
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Dict, List, Optional, Tuple, Union

import torch

__all__ = [
    "ChecksumError",
    "DatasetNotFoundError",
    "DownloadError",
    "Domain",
    "FileSpec",
    "REGISTRY",
    "BENCHMARK_FILES",
    "data_root",
    "fetch",
    "download",
    "file_url",
]

logger = logging.getLogger("adaptlib.datasets")

PathLike = Union[str, "os.PathLike[str]"]

DATA_ENV = "ADAPTLIB_DATA"
MIRROR_ENV = "ADAPTLIB_MIRROR"
_DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK = 1 << 20


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------
class DatasetNotFoundError(FileNotFoundError):
    """A data file is not present under the data root (and ``download`` was not requested).

    The message names the file, the full path where it was looked for, and how to get it.
    """


class ChecksumError(OSError):
    """A data file's sha256 differs from the registered one (corrupt, truncated or wrong file).

    The message names the file and gives the expected and the actual sha256.
    """


class DownloadError(OSError):
    """A download failed (network error, HTTP error). No partial file is left behind."""


# --------------------------------------------------------------------------------------
# Domain container
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Domain:
    """One labelled domain of a benchmark, as returned by every loader.

    Attributes:
        name: domain name, e.g. ``"amazon"`` or ``"usps"``.
        x: features, shape ``(N, D)``, dtype ``torch.float32``, on CPU; or, for text read by a
            trainable encoder (``amazon-reviews-text-finetune``), token ids, shape ``(N, L)``,
            dtype ``torch.int64`` (``L`` tokens per row, padded; ``input_dim`` is then ``L``).
        y: labels, shape ``(N,)``, dtype ``torch.int64``, values in ``0..C-1``.
        classes: the ``C`` class names; ``classes[k]`` is the name of label ``k``.

    Loaders return fresh tensors on every call, so changing ``x`` or ``y`` in place never
    affects later loads. Equality is identity (tensors have no boolean ``==``).

    Raises:
        TypeError / ValueError: on construction, when ``x``/``y`` have the wrong type, dtype,
            shape, or ``y`` holds labels outside ``0..len(classes)-1``.
    """

    name: str
    x: torch.Tensor
    y: torch.Tensor
    classes: Tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"Domain name must be a non-empty str, got {self.name!r}")
        if not isinstance(self.x, torch.Tensor) or self.x.dtype not in (torch.float32, torch.int64) \
                or self.x.dim() != 2:
            raise TypeError(
                "Domain x must be a float32 torch.Tensor of shape (N, D) (or int64 token ids (N, L)), got "
                f"{type(self.x).__name__} {getattr(self.x, 'dtype', '')} {tuple(getattr(self.x, 'shape', ()))}"
            )
        if not isinstance(self.y, torch.Tensor) or self.y.dtype != torch.int64 or self.y.dim() != 1:
            raise TypeError(
                "Domain y must be an int64 torch.Tensor of shape (N,), got "
                f"{type(self.y).__name__} {getattr(self.y, 'dtype', '')} {tuple(getattr(self.y, 'shape', ()))}"
            )
        if self.y.shape[0] != self.x.shape[0]:
            raise ValueError(
                f"Domain x and y must have the same number of rows, got {self.x.shape[0]} and {self.y.shape[0]}"
            )
        classes = tuple(self.classes)
        if not classes or not all(isinstance(c, str) for c in classes):
            raise TypeError(f"Domain classes must be a non-empty tuple of str, got {self.classes!r}")
        object.__setattr__(self, "classes", classes)
        if self.y.numel() and (int(self.y.min()) < 0 or int(self.y.max()) >= len(classes)):
            raise ValueError(
                f"Domain y must hold labels in 0..{len(classes) - 1}, "
                f"got range {int(self.y.min())}..{int(self.y.max())}"
            )

    @property
    def num_classes(self) -> int:
        """Number of classes ``C`` (``len(classes)``)."""
        return len(self.classes)

    @property
    def input_dim(self) -> int:
        """Feature dimension ``D`` (tokens per row ``L`` for token ids)."""
        return int(self.x.shape[1])

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __repr__(self) -> str:
        return (
            f"Domain(name={self.name!r}, x={tuple(self.x.shape)} {self.x.dtype}, "
            f"y={tuple(self.y.shape)} {self.y.dtype}, num_classes={self.num_classes})"
        )


# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileSpec:
    """One registered data file.

    Attributes:
        relpath: path relative to the data root, POSIX style, e.g.
            ``"office_caltech10_surf/amazon_SURF_L10.mat"``.
        sha256: expected lowercase hex sha256 of the file's bytes.
        repo: GitHub ``owner/name`` the file was copied from.
        commit: pinned 40-hex commit of ``repo``.
        source_path: path of the file inside ``repo`` at ``commit``.
    """

    relpath: str
    sha256: str
    repo: str
    commit: str
    source_path: str

    @property
    def url(self) -> str:
        """The pinned ``raw.githubusercontent.com`` URL of this file."""
        return f"https://raw.githubusercontent.com/{self.repo}/{self.commit}/{self.source_path}"


_JDA = ("AngryCarrot/JDA", "12167daf32b01a07b85fdfa3db57a42b3be7eefe")
_DANN = ("GRAAL-Research/domain_adversarial_neural_network", "74eec5e0ae06bd6614bce048abba492c16a633e3")
_SCL = ("yftah89/structural-correspondence-learning-SCL", "75988b0a47300d2352ccd07b2834a233674678c6")
_MNIST = ("RahulBaboota/MNIST", "07115411d22bb2ccfe9bc7963780bbe5cb3c8a4e")
_USPS = ("niuers/Learning-From-Data-A-Short-Course", "879a698b960e5867f7c2b11f8938fa89c3d21839")


def _spec(folder: str, name: str, sha: str, source: Tuple[str, str], source_dir: str = "data") -> FileSpec:
    return FileSpec(f"{folder}/{name}", sha, source[0], source[1], f"{source_dir}/{name}")


#: Every file the loaders use (plus the GFK ``*_imgs.mat`` name lists and data README, which
#: document the Office-Caltech10 class names), keyed by relative path. Checksums are those of
#: ``shared/data/SHA256SUMS``; sources are the pinned commits named in ``shared/data/README.md``.
REGISTRY: Dict[str, FileSpec] = {
    s.relpath: s
    for s in [
        # Office-Caltech10 SURF (Gong et al., CVPR 2012), from AngryCarrot/JDA data/.
        _spec("office_caltech10_surf", "amazon_SURF_L10.mat",
              "df32548b994e18d364c99e1f317e1fae100597259f0423a41b90f4f68187bb1f", _JDA),
        _spec("office_caltech10_surf", "webcam_SURF_L10.mat",
              "a6a9c78b4b7181dfbb58bcfd351d4ebd737f171c31247b8884948aa156d3f700", _JDA),
        _spec("office_caltech10_surf", "dslr_SURF_L10.mat",
              "44d673c68e1d07b837893aa74dba3b986e4a6cc3fd66f0dd357683bdef059216", _JDA),
        _spec("office_caltech10_surf", "Caltech10_SURF_L10.mat",
              "4f9334c8ced489d5054de97a5fd51a61f017f3bcd1f38c9a85c6d78cb9d7bda5", _JDA),
        _spec("office_caltech10_surf", "amazon_SURF_L10_imgs.mat",
              "6d1624443b99f69a2f80bdfea25800f49c339db2f702ce06328618ae7e3b7e59", _JDA),
        _spec("office_caltech10_surf", "webcam_SURF_L10_imgs.mat",
              "35a6b38a2df34af6f7a34e0030e89f71540aefac84f0ea8645b3a85d57c9e6be", _JDA),
        _spec("office_caltech10_surf", "dslr_SURF_L10_imgs.mat",
              "ef8db1910ca89c717b8c992de1c4a1923694e6f2138465cee8483924c9aaef45", _JDA),
        _spec("office_caltech10_surf", "Caltech10_SURF_L10_imgs.mat",
              "9f11333e518aa550464464dc0490576d9779ef7d18b9cbbab5195526d8de5ee5", _JDA),
        _spec("office_caltech10_surf", "GFK_data_README.txt",
              "2c976a5154fed518f51d8076b4d6ae61acd48d8890ed08ec7bdd7908ce961b88", _JDA),
        # MNIST-USPS pair of JDA (Long et al., ICCV 2013), from AngryCarrot/JDA data/.
        _spec("mnist_usps_jda", "MNIST_vs_USPS.mat",
              "2b87e5a793e77826417e6c483e0850d6666c9746717bce2561db43f3f30efd4d", _JDA),
        _spec("mnist_usps_jda", "USPS_vs_MNIST.mat",
              "77d2df99e2aab8a722c8d4ff7c93a92d8b29d409a065f12e972168d1089e2971", _JDA),
        # MNIST test split (official IDX files; LeCun et al. 1998) and the full USPS corpus (Hull 1994).
        _spec("mnist", "t10k-images-idx3-ubyte.gz",
              "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", _MNIST, "FLAGS.data_dir"),
        _spec("mnist", "t10k-labels-idx1-ubyte.gz",
              "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", _MNIST, "FLAGS.data_dir"),
        _spec("usps", "usps.h5", "734f88c541104a956d88be2c95d03b4a463ffd74ccc2ba9c80841fb98e3fcb36", _USPS),
        # Amazon reviews (Blitzer et al. 2007; Chen et al. 2012) as used by DANN (JMLR 2016).
        _spec("amazon_reviews_dann", "books_train.svmlight",
              "317f9a2ec34b81de770b63a84d8c5cc2dc16bd0be6e079d2ff5b5bad5213ea19", _DANN),
        _spec("amazon_reviews_dann", "books_test.svmlight",
              "fe4605c7dcf0e0a9410fd2a32f247caaf9abb352cc6e4c3e0f400853163ad9c4", _DANN),
        _spec("amazon_reviews_dann", "dvd_train.svmlight",
              "95f602aa08bf6b55758f7b0b18df3882fe30acb11987ee60b6b4bb3c44cba733", _DANN),
        _spec("amazon_reviews_dann", "dvd_test.svmlight",
              "4fe1b1a15010f78d8d0c49fe362d35fd4677463a45f1ac02a9f410ae1e638060", _DANN),
        _spec("amazon_reviews_dann", "electronics_train.svmlight",
              "7d0061f03ff3827e4f8036b051b5e5828fddc0cd115aa5b212cd28d624dc14e4", _DANN),
        _spec("amazon_reviews_dann", "electronics_test.svmlight",
              "641783bc941839c3a111d3488a1b7e3bd820a61ec14a129e7429b47703aa961d", _DANN),
        _spec("amazon_reviews_dann", "kitchen_train.svmlight",
              "a70b5ebfe1413e0e16280360905f5c3b64389c435cd20c0165dc9d7f293b31b5", _DANN),
        _spec("amazon_reviews_dann", "kitchen_test.svmlight",
              "e1502b97a824eb12314be4447394fa736fecb781c0724e6529cd6733ac7ff6d8", _DANN),
        # The same Blitzer et al. (2007) labelled reviews as raw text, from the SCL repository's data/.
        _spec("amazon_reviews_raw", "books/negative.parsed",
              "c212e6f8601db51807baefc7db44e0c96c900fb53da16e57beaa7b96074a9c58", _SCL),
        _spec("amazon_reviews_raw", "books/positive.parsed",
              "b740263ec09f4e8b070ba82dd160306d0bd870eb394bc8d6e191d76986c30b98", _SCL),
        _spec("amazon_reviews_raw", "dvd/negative.parsed",
              "58c9e62eb5e97de4dbc7817d4549c6cd23fb947d6403eaddae1cebc7a8459b17", _SCL),
        _spec("amazon_reviews_raw", "dvd/positive.parsed",
              "3258e0b744068d5cf493b585edba40bd9f29ff457f7ff01be8b94c3af792047c", _SCL),
        _spec("amazon_reviews_raw", "electronics/negative.parsed",
              "f09930ad7cbf8e6e3be6add636c932c197ec7d55f351907d6c3cadc22bf4eeb0", _SCL),
        _spec("amazon_reviews_raw", "electronics/positive.parsed",
              "f4eee889891058bee5c0773f7c6862f8dc9ea59ef182d170ee42de2ff2c4844e", _SCL),
        _spec("amazon_reviews_raw", "kitchen/negative.parsed",
              "a73bb3dcbe165d18983aa37fa8afc1b745a643582b422b78d1d95ee4e0576318", _SCL),
        _spec("amazon_reviews_raw", "kitchen/positive.parsed",
              "bf12d5495293d490c61665111f55e33243cfa7281b96e62e467bc84d3b7e7a58", _SCL),
    ]
}

#: Relative paths of the files each benchmark's loaders read (what ``download`` fetches).
BENCHMARK_FILES: Dict[str, Tuple[str, ...]] = {
    "office-caltech10-surf": tuple(
        f"office_caltech10_surf/{d}_SURF_L10.mat" for d in ("amazon", "webcam", "dslr", "Caltech10")
    ),
    "mnist-usps-jda": ("mnist_usps_jda/MNIST_vs_USPS.mat", "mnist_usps_jda/USPS_vs_MNIST.mat"),
    "digits-images": ("mnist/t10k-images-idx3-ubyte.gz", "mnist/t10k-labels-idx1-ubyte.gz", "usps/usps.h5"),
    "digits-images-efficientnet": ("mnist/t10k-images-idx3-ubyte.gz", "mnist/t10k-labels-idx1-ubyte.gz",
                                   "usps/usps.h5"),
    "amazon-reviews": tuple(
        f"amazon_reviews_dann/{d}_{s}.svmlight"
        for d in ("books", "dvd", "electronics", "kitchen")
        for s in ("train", "test")
    ),
    "amazon-reviews-text": tuple(
        f"amazon_reviews_raw/{d}/{p}.parsed"
        for d in ("books", "dvd", "electronics", "kitchen")
        for p in ("negative", "positive")
    ),
}
BENCHMARK_FILES["amazon-reviews-text-finetune"] = BENCHMARK_FILES["amazon-reviews-text"]
BENCHMARK_FILES["amazon-reviews-msda"] = BENCHMARK_FILES["amazon-reviews"]


# --------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------
def _as_path(value: object, name: str) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike path, got {type(value).__name__}")
    text = os.fspath(value)
    if isinstance(text, bytes) or not text:
        raise ValueError(f"{name} must be a non-empty str path, got {value!r}")
    return Path(text).expanduser().absolute()


def data_root(root: Optional[PathLike] = None) -> Path:
    """Return the folder that holds (or will hold) the data files, as an absolute ``Path``.

    Resolution order: ``root`` if given; else ``$ADAPTLIB_DATA`` if set and non-empty
    (a relative value is taken relative to the current working directory); else
    ``$XDG_CACHE_HOME/adaptlib`` if ``XDG_CACHE_HOME`` is set; else ``~/.cache/adaptlib``.
    The folder is not created and need not exist.

    Raises:
        TypeError: ``root`` is neither ``None``, a ``str`` nor an ``os.PathLike``.
        ValueError: ``root`` is an empty string.
    """
    if root is not None:
        return _as_path(root, "root")
    env = os.environ.get(DATA_ENV, "")
    if env:
        return _as_path(env, f"${DATA_ENV}")
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / "adaptlib").absolute()


def _spec_for(relpath: object) -> FileSpec:
    if not isinstance(relpath, (str, os.PathLike)):
        raise TypeError(f"relpath must be a str path relative to the data root, got {type(relpath).__name__}")
    key = PurePosixPath(Path(os.fspath(relpath)).as_posix()).as_posix()
    try:
        return REGISTRY[key]
    except KeyError:
        raise ValueError(
            f"relpath {key!r} is not a registered data file; known files: {sorted(REGISTRY)}"
        ) from None


def _benchmarks_of(relpath: str) -> List[str]:
    return [name for name, files in BENCHMARK_FILES.items() if relpath in files]


def file_url(relpath: str, mirror: Optional[str] = None) -> str:
    """Return the URL ``relpath`` is downloaded from.

    ``mirror`` (else ``$ADAPTLIB_MIRROR``) is a base URL under which files sit at their
    relative paths (``{mirror}/{relpath}``; ``http(s)://`` and ``file://`` work). Without a
    mirror, the file's pinned ``raw.githubusercontent.com`` URL from :data:`REGISTRY`.

    Raises:
        ValueError: ``relpath`` is not registered, or ``mirror`` is not a non-empty str URL.
    """
    spec = _spec_for(relpath)
    if mirror is None:
        mirror = os.environ.get(MIRROR_ENV) or None
    if mirror is None:
        return spec.url
    if not isinstance(mirror, str) or not mirror.strip():
        raise ValueError(f"mirror must be a non-empty base URL string, got {mirror!r}")
    return mirror.rstrip("/") + "/" + urllib.parse.quote(spec.relpath)


# --------------------------------------------------------------------------------------
# Checksums
# --------------------------------------------------------------------------------------
_verified: Dict[Tuple[str, int, int, int, int], str] = {}
_verified_lock = threading.Lock()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _stat_key(path: Path) -> Tuple[str, int, int, int, int]:
    st = path.stat()
    return (str(path), st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def _verify(path: Path, spec: FileSpec) -> None:
    """Check ``path`` against ``spec.sha256``, hashing at most once per (path, inode, mtime, size)."""
    key = _stat_key(path)
    with _verified_lock:
        if _verified.get(key) == spec.sha256:
            return
    actual = _sha256_file(path)
    if actual != spec.sha256:
        raise ChecksumError(
            f"checksum mismatch for data file {spec.relpath!r} at {path}: "
            f"expected sha256 {spec.sha256}, got {actual}. The file is corrupt, truncated or "
            f"a different version; delete it and fetch it again (download=True), "
            f"or get it from {spec.url}"
        )
    with _verified_lock:
        _verified[key] = spec.sha256


# --------------------------------------------------------------------------------------
# Fetch / download
# --------------------------------------------------------------------------------------
def _not_found_message(spec: FileSpec, path: Path, root: Path) -> str:
    benches = _benchmarks_of(spec.relpath)
    bench = benches[0] if benches else "<benchmark>"
    return (
        f"data file {spec.relpath!r} not found: looked for {path} (data root {root}). "
        f"To get it: run `adaptlib download {bench} --root {shlex.quote(str(root))}` "
        f"(or in Python: adaptlib.datasets.download({bench!r}, root={str(root)!r})); "
        f"or set ADAPTLIB_DATA to a folder that already holds the data; "
        f"or pass download=True to the loader / --download on the command line; "
        f"or fetch it by hand from {spec.url} and save it as {path}."
    )


def _download_to(spec: FileSpec, path: Path, mirror: Optional[str]) -> None:
    url = file_url(spec.relpath, mirror)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        logger.info("downloading %s -> %s", url, path)
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as resp:
                    for chunk in iter(lambda: resp.read(_CHUNK), b""):
                        h.update(chunk)
                        out.write(chunk)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                raise DownloadError(
                    f"could not download data file {spec.relpath!r} from {url}: {exc}"
                ) from exc
            out.flush()
            os.fsync(out.fileno())
        actual = h.hexdigest()
        if actual != spec.sha256:
            raise ChecksumError(
                f"checksum mismatch for downloaded data file {spec.relpath!r} from {url}: "
                f"expected sha256 {spec.sha256}, got {actual}. Nothing was saved; check the "
                f"mirror (ADAPTLIB_MIRROR / mirror=) or try again."
            )
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    with _verified_lock:
        _verified[_stat_key(path)] = spec.sha256


def fetch(
    relpath: PathLike,
    root: Optional[PathLike] = None,
    download: bool = False,
    mirror: Optional[str] = None,
) -> Path:
    """Return the absolute, checksum-verified local ``Path`` of a registered data file.

    Args:
        relpath: path relative to the data root, e.g.
            ``"office_caltech10_surf/amazon_SURF_L10.mat"`` (a key of :data:`REGISTRY`).
        root: data root; see :func:`data_root`.
        download: if the file is missing, download it (see below) instead of raising.
        mirror: base URL to download from instead of the pinned GitHub URL; see :func:`file_url`.

    The sha256 is checked once per process per file version (cached on path, inode, mtime
    and size), not on every call. Downloads go to a temporary file in the target folder,
    are verified, then atomically renamed into place; a failed or mismatched download
    leaves no file behind. An existing file is never overwritten.

    Raises:
        DatasetNotFoundError: (a ``FileNotFoundError``) the file is missing and
            ``download`` is false; the message says which file, where it was looked for,
            and how to get it.
        ChecksumError: the local or downloaded file has the wrong sha256 (message gives
            the file, expected and actual sha256).
        DownloadError: the download failed.
        ValueError / TypeError: ``relpath`` is not registered, or bad ``root``/``mirror``.
    """
    spec = _spec_for(relpath)
    if not isinstance(download, bool):
        raise TypeError(f"download must be a bool, got {type(download).__name__}")
    base = data_root(root)
    path = base.joinpath(*spec.relpath.split("/"))
    if path.is_file():
        _verify(path, spec)
        return path
    if path.exists():
        raise DatasetNotFoundError(f"data file {spec.relpath!r}: {path} exists but is not a regular file")
    if not download:
        raise DatasetNotFoundError(_not_found_message(spec, path, base))
    _download_to(spec, path, mirror)
    return path


def download(
    benchmark_name: str,
    root: Optional[PathLike] = None,
    mirror: Optional[str] = None,
) -> List[Path]:
    """Make sure every file of a benchmark is present and verified; return their paths.

    Files already present are only verified; missing ones are downloaded as in
    :func:`fetch` with ``download=True``.

    Args:
        benchmark_name: a key of :data:`BENCHMARK_FILES` (``"office-caltech10-surf"``,
            ``"mnist-usps-jda"``, ``"amazon-reviews"``, ``"digits-images"``, ...).
        root: data root; see :func:`data_root`.
        mirror: base URL to download from; see :func:`file_url`.

    Returns:
        The absolute local paths, in the order of the benchmark's ``files``.

    Raises:
        ValueError: unknown ``benchmark_name`` (the message lists the known ones).
        ChecksumError, DownloadError: as in :func:`fetch`.
    """
    if not isinstance(benchmark_name, str) or benchmark_name not in BENCHMARK_FILES:
        raise ValueError(
            f"benchmark_name must be one of {sorted(BENCHMARK_FILES)}, got {benchmark_name!r}"
        )
    return [fetch(rel, root=root, download=True, mirror=mirror) for rel in BENCHMARK_FILES[benchmark_name]]


def _file_key(path: Path) -> Tuple[str, int, int]:
    """(path, mtime_ns, size): a cache key that changes when the file changes."""
    st = path.stat()
    return (str(path), st.st_mtime_ns, st.st_size)
