import os
from pathlib import Path

import pytest
import torch

# Triton kernels are tested on the CPU through Triton's interpreter. The variable is read when
# a kernel is defined, so it must be set before adaptlib's kernel modules are imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parents[1]

# One intra-op thread: on a shared 2-core machine torch's default thread pool makes the many
# small ops of these tests far slower, and results do not depend on it.
torch.set_num_threads(1)

try:  # property tests draw the same examples on every run, so the suite is deterministic;
    # random exploration is the job of scripts/fuzz_losses.py.
    from hypothesis import settings

    settings.register_profile("adaptlib", derandomize=True)
    # scripts/randomized_properties.py: `pytest --hypothesis-profile=randomized --hypothesis-seed=S`
    settings.register_profile("randomized", derandomize=False, database=None, deadline=None)
    settings.load_profile("adaptlib")
except ImportError:  # hypothesis is in the dev extra; its tests skip without it
    pass


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The benchmark data folder: $ADAPTLIB_DATA, else ../shared/data beside the repository."""
    # absolute: tests hand it to subprocesses that run in other folders (CI sets a relative path)
    root = Path(os.environ.get("ADAPTLIB_DATA", REPO.parent / "shared" / "data")).resolve()
    if not root.is_dir():
        pytest.fail(f"benchmark data not found at {root}: set ADAPTLIB_DATA")
    return root


@pytest.fixture(scope="session")
def surf_small(data_root):
    """A small real subset of Office-Caltech10 SURF: 120 amazon (source) and 90 webcam (target) samples."""
    from adaptlib.datasets import load_office_caltech10_surf

    gen = torch.Generator().manual_seed(0)
    src = load_office_caltech10_surf("amazon", root=data_root)
    tgt = load_office_caltech10_surf("webcam", root=data_root)
    si = torch.randperm(src.x.shape[0], generator=gen)[:120]
    ti = torch.randperm(tgt.x.shape[0], generator=gen)[:90]
    return src.x[si], src.y[si], tgt.x[ti], tgt.y[ti]


def _triton_usable() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"


KERNEL_PATHS = ("dense", "tiled", "triton")


@pytest.fixture(params=KERNEL_PATHS)
def kernel_path(request) -> str:
    """Every loss test that takes this fixture runs once per computation path of the losses.

    ``"triton"`` runs the fused kernels, on the CPU under ``TRITON_INTERPRET=1`` (as in CI),
    and is skipped where Triton is not installed.
    """
    if request.param == "triton" and not _triton_usable():
        pytest.skip("triton is not installed (pip install -e '.[triton]')")
    return request.param


@pytest.fixture(scope="session")
def hooks():
    """The docs site's build hooks (scripts/docs_hooks.py), imported as a module; skipped without mkdocs."""
    import sys

    pytest.importorskip("mkdocs")
    scripts = str(Path(__file__).resolve().parents[1] / "scripts")
    sys.path.insert(0, scripts)
    try:
        import docs_hooks
    finally:
        sys.path.remove(scripts)
    return docs_hooks
