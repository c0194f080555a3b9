r"""Problems, peer implementations and memory estimates shared by the alignment benchmarks.

Used by ``test_alignment.py`` (pytest-benchmark, CPU), ``memory.py`` (peak memory in fresh
subprocesses) and ``gpu.py`` (one script for a CUDA machine). Nothing here is part of the
adaptlib package.

**Problem.** Source ``x`` ``(N, D)`` with rows drawn from :math:`\mathcal N(0, I_D / D)` and
target ``y`` ``(M, D)`` from :math:`\mathcal N(\mu, I_D / D)` with :math:`\mu = 0.5 / \sqrt D`
in every coordinate, float32 by default. The :math:`1/D` scaling keeps squared distances
near 2 (plus :math:`\|\mu\|^2 = 0.25` across domains) for every ``D``, so one entropic
regularisation ``EPSILON`` means the same thing in every problem and POT's non-log
Sinkhorn (which forms :math:`e^{-C/\varepsilon}`) does not underflow.

**Units.** Every Sinkhorn implementation here is called so that it solves
:math:`\min_{P \in \Pi(a, b)} \langle P, C\rangle + \varepsilon\,\mathrm{KL}(P \| a\otimes b)`
with :math:`C_{ij} = \|x_i - y_j\|^2` and :math:`\varepsilon` = ``EPSILON`` (squared feature
units):

* adaptlib ``sinkhorn(x, y, epsilon=EPSILON)``: ``.value`` is that optimum (the dual value,
  called ``ot_eps`` below), ``.transport_cost`` is :math:`\langle P, C\rangle`;
* POT ``ot.sinkhorn2(a, b, C, reg=EPSILON)`` returns :math:`\langle P, C\rangle`
  (``transport_cost``); POT's entropy term differs from the KL term by a constant, so the
  plan is the same;
* GeomLoss ``SamplesLoss("sinkhorn", p=2, blur=b)`` uses the cost :math:`\|x-y\|^2/2` and
  :math:`\varepsilon' = b^p`; with :math:`b = \sqrt{\varepsilon/2}` its problem is the one
  above divided by 2, so ``2 * loss`` is ``ot_eps`` (``debias=False``).

The stopping rules differ: adaptlib stops when the L1 row-marginal violation is below
``tol`` (checked every iteration on the CPU), POT when the L2 column-marginal violation is
below ``stopThr = tol`` (checked every 10 iterations), GeomLoss runs a fixed epsilon-scaling
schedule (``scaling``) with no tolerance.

**Reproduced peers** (written from the published formulas, not imported):

* TLlib-style MK-MMD (Jiang et al., Transfer-Learning-Library, ``MultipleKernelMaximumMeanDiscrepancy``
  with the DAN example's ``GaussianKernel(alpha=2**k), k = -3..1``): kernels
  :math:`\exp(-d^2 / (2 \alpha_k \overline{d^2}))` with :math:`\overline{d^2}` the mean of all
  :math:`(N+M)^2` squared distances of the stacked batch (detached), unbiased estimator.
* DeepDA-style MMD (Wang et al., ``transferlearning/code/DeepDA``, ``MMDLoss`` with
  ``kernel_mul=2, kernel_num=5``): bandwidth :math:`h = \sum_{i \ne j} d^2_{ij} / (P^2 - P)`
  divided by :math:`2^{\lfloor 5/2 \rfloor}`, kernels :math:`\exp(-d^2 / (h\,2^i))`,
  :math:`i = 0..4`, biased estimator (means of the four blocks).

Both form the squared distances as those libraries do: by broadcasting the
:math:`(N+M)^2 \times D` tensor of differences (memory :math:`\approx 3 (N+M)^2 D` floats
with autograd).
"""
from __future__ import annotations

import functools
import inspect
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch

EPSILON = 0.1  # entropic regularisation, squared feature units (C = ||x - y||^2)
TOL = 1e-4  # marginal tolerance (float32: 1e-6 is often unreachable)
MAX_ITER = 1000
NUM_KERNELS = 5
GIB = 1024 ** 3


# --------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------
def mem_limit_bytes() -> float:
    """Memory a case may use: ``ADAPTLIB_BENCH_MEM_GIB`` (default 16) GiB, and never more than
    85 % of the memory the OS reports available right now."""
    limit = float(os.environ.get("ADAPTLIB_BENCH_MEM_GIB", "16")) * GIB
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    limit = min(limit, 0.85 * int(line.split()[1]) * 1024)
    except OSError:
        pass
    return limit


def has_path_arg(fn: Callable) -> bool:
    """True when ``fn`` accepts ``path=`` (the dense/tiled/triton paths of issue 3)."""
    try:
        return "path" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


@functools.lru_cache(maxsize=None)
def pykeops_works() -> Tuple[bool, str]:
    """Whether GeomLoss's ``online`` backend can run here (it needs a working pykeops)."""
    try:
        import pykeops  # noqa: F401
    except Exception as exc:  # pragma: no cover - depends on the machine
        return False, f"pykeops is not importable ({type(exc).__name__}: {exc})"
    try:
        import pykeops.torch as pkt  # noqa: F401
        from pykeops.torch import LazyTensor

        a = LazyTensor(torch.randn(8, 1, 2)); b = LazyTensor(torch.randn(1, 8, 2))
        ((a - b) ** 2).sum(-1).exp().sum(1)
    except Exception as exc:  # pragma: no cover
        return False, f"pykeops does not compile here ({type(exc).__name__})"
    return True, ""


def import_status(module: str) -> Tuple[bool, str]:
    try:
        __import__(module)
        return True, ""
    except Exception as exc:
        return False, f"{module} is not importable ({type(exc).__name__}: {str(exc).splitlines()[0]})"


# --------------------------------------------------------------------------------------
# Problems
# --------------------------------------------------------------------------------------
def make_pair(n: int, m: int, d: int, *, seed: int = 0, device="cpu", dtype=torch.float32):
    """Source ``(n, d)`` and target ``(m, d)`` point clouds (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) / math.sqrt(d)
    y = (torch.randn(m, d, generator=g) + 0.5) / math.sqrt(d)
    return x.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype)


# --------------------------------------------------------------------------------------
# Reproduced peers (from the published formulas)
# --------------------------------------------------------------------------------------
def _broadcast_sq_dists(z: torch.Tensor) -> torch.Tensor:
    """``(P, P)`` squared distances via the ``(P, P, D)`` tensor of differences (as TLlib/DeepDA)."""
    diff = z.unsqueeze(0) - z.unsqueeze(1)
    return (diff * diff).sum(2)


def tllib_style_mmd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MK-MMD² as TLlib's DAN: alphas 2**-3..2**1 times the mean squared distance, unbiased."""
    n = x.shape[0]
    d2 = _broadcast_sq_dists(torch.cat([x, y]))
    mean_d2 = d2.detach().mean()
    k = None
    for p in range(-3, 2):
        term = torch.exp(-d2 / (2.0 * (2.0 ** p) * mean_d2))
        k = term if k is None else k + term
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    m = kyy.shape[0]
    xx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return xx + yy - 2.0 * kxy.mean()


def deepda_style_mmd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MMD² as DeepDA's MMDLoss(kernel_mul=2, kernel_num=5): mean-distance bandwidths, biased."""
    n = x.shape[0]
    d2 = _broadcast_sq_dists(torch.cat([x, y]))
    p = d2.shape[0]
    h = d2.detach().sum() / (p * p - p)
    h = h / (2.0 ** (NUM_KERNELS // 2))
    k = None
    for i in range(NUM_KERNELS):
        term = torch.exp(-d2 / (h * 2.0 ** i))
        k = term if k is None else k + term
    return k[:n, :n].mean() + k[n:, n:].mean() - k[:n, n:].mean() - k[n:, :n].mean()


# --------------------------------------------------------------------------------------
# Implementations
# --------------------------------------------------------------------------------------
@dataclass
class Impl:
    """One way of computing one problem's loss.

    ``make(x, y)`` returns a zero-argument callable computing the scalar loss (a tensor with a
    graph back to ``x``/``y``), plus a dict of recorded values (filled after a call).
    ``mem(n, m, d)``: estimated peak bytes of one forward+backward in float32.
    ``order``: complexity exponent in N used to predict the time at larger N.
    """

    name: str
    problem: str
    make: Callable
    mem: Callable[[int, int, int], float]
    available: Tuple[bool, str] = (True, "")
    baseline: bool = False
    order: float = 2.0
    floor: bool = False  # a floor of the machine (no loss; forward only, no backward)
    devices: Tuple[str, ...] = ("cpu", "cuda")
    notes: str = ""
    record: Dict[str, float] = field(default_factory=dict)


def _p2(n, m):
    return float((n + m) ** 2)


def _adaptlib_mmd(path: Optional[str]):
    from adaptlib.losses import mmd

    def make(x, y):
        kw = {"path": path} if path is not None else {}
        return (lambda: mmd(x, y, **kw)), {}

    return make


def _adaptlib_sinkhorn(path: Optional[str]):
    from adaptlib.losses import sinkhorn

    def make(x, y):
        kw = {"path": path} if path is not None else {}
        rec: Dict[str, float] = {}

        def run():
            res = sinkhorn(x, y, epsilon=EPSILON, max_iter=MAX_ITER, tol=TOL, **kw)
            rec["ot_eps"] = float(res.value.detach())
            rec["transport_cost"] = float(res.transport_cost.detach())
            rec["n_iter"] = res.n_iter
            return res.value

        return run, rec

    return make


def _adaptlib_coral(x, y):
    from adaptlib.losses import coral

    return (lambda: coral(x, y)), {}


def _pot_sinkhorn(method: str):
    def make(x, y):
        import ot

        rec: Dict[str, float] = {}
        a = torch.full((x.shape[0],), 1.0 / x.shape[0], dtype=x.dtype, device=x.device)
        b = torch.full((y.shape[0],), 1.0 / y.shape[0], dtype=y.dtype, device=y.device)

        def run():
            C = ot.dist(x, y)  # squared Euclidean, torch backend
            val = ot.sinkhorn2(a, b, C, EPSILON, method=method, numItermax=MAX_ITER, stopThr=TOL)
            rec["transport_cost"] = float(val.detach())
            return val

        return run, rec

    return make


def _pot_emd(x, y):
    import ot

    rec: Dict[str, float] = {}
    a = torch.full((x.shape[0],), 1.0 / x.shape[0], dtype=x.dtype, device=x.device)
    b = torch.full((y.shape[0],), 1.0 / y.shape[0], dtype=y.dtype, device=y.device)

    def run():
        val = ot.emd2(a, b, ot.dist(x, y), numItermax=10_000_000)
        rec["exact_ot"] = float(val.detach())
        return val

    return run, rec


def _geomloss(scaling: float, backend: str):
    def make(x, y):
        from geomloss import SamplesLoss

        rec: Dict[str, float] = {}
        loss = SamplesLoss("sinkhorn", p=2, blur=math.sqrt(EPSILON / 2.0), scaling=scaling,
                           debias=False, backend=backend)

        def run():
            val = 2.0 * loss(x, y)  # GeomLoss cost is |x-y|^2/2: x2 gives OT_eps in C units
            rec["ot_eps"] = float(val.detach())
            return val

        return run, rec

    return make


def _geomloss_gaussian(backend: str):
    """GeomLoss ``SamplesLoss("gaussian")``: the biased MMD^2 (kernel norm) with ONE Gaussian
    bandwidth (``blur``), set to the median pairwise distance of the stacked batch (computed
    once, outside the timed call). adaptlib's row uses five bandwidths, so this favours GeomLoss."""

    def make(x, y):
        from geomloss import SamplesLoss

        with torch.no_grad():
            z = torch.cat([x, y])
            sub = z[:: max(1, z.shape[0] // 1024)]
            blur = float(torch.median(torch.pdist(sub)))
        loss = SamplesLoss("gaussian", blur=blur, backend=backend)
        return (lambda: loss(x, y)), {}

    return make


def _floor_issue_mmd(x, y):
    """Issue 3's MMD floor: two Gram-size matmuls of the stacked batch plus one exp pass over
    the (N+M)^2 matrix (what a fused forward+backward cannot avoid)."""
    z = torch.cat([x, y]).detach()
    p = z.shape[0]
    buf = torch.empty(p, p, dtype=z.dtype, device=z.device)

    def run():
        torch.mm(z, z.T, out=buf)
        torch.exp(buf, out=buf)
        return buf @ z  # second Gram-size matmul (the gradient's P x P times P x D product)

    return run, {}


def _skada_dan(num_sigmas: Optional[int]):
    def make(x, y):
        from skada.deep.losses import dan_loss

        sig = None
        if num_sigmas is not None:
            with torch.no_grad():
                med = torch.median(torch.cdist(x, x))
            sig = [float(med) * 2.0 ** (k - num_sigmas // 2) for k in range(num_sigmas)]
        return (lambda: dan_loss(x, y, sigmas=sig)), {}

    return make


def _skada_coral(x, y):
    from skada.deep.losses import deepcoral_loss

    return (lambda: deepcoral_loss(x, y)), {}


def _floor_matmul_stacked(x, y):
    z = torch.cat([x, y]).detach()
    return (lambda: z @ z.T), {}


def _floor_matmul_cross(x, y):
    xd, yd = x.detach(), y.detach()
    return (lambda: xd @ yd.T), {}


def _floor_exp(shape_fn):
    def make(x, y):
        shape = shape_fn(x.shape[0], y.shape[0])
        buf = torch.rand(shape, dtype=x.dtype, device=x.device)
        out = torch.empty_like(buf)
        return (lambda: torch.exp(buf, out=out)), {}

    return make


def _floor_cov(x, y):
    xd = x.detach()
    return (lambda: xd.T @ xd), {}


def _tiled_mem(n: int, m: int, d: int) -> float:
    """Tiled/Triton paths: inputs, gradients and a few copies, plus a few 1024^2 blocks."""
    return 4.0 * ((n + m) * d * 8 + 8 * 1024 ** 2)


def _auto_mem(dense: Callable, has_path: bool) -> Callable:
    """``path="auto"``: the dense path while its matrices fit in ``DENSE_MAX_BYTES``, else tiled."""
    if not has_path:
        return dense
    try:
        from adaptlib.kernels import DENSE_MAX_BYTES
    except ImportError:
        DENSE_MAX_BYTES = 1 << 30
    return lambda n, m, d: dense(n, m, d) if dense(n, m, d) <= DENSE_MAX_BYTES else _tiled_mem(n, m, d)


def implementations(problem: str, *, include_paths=("dense", "tiled", "triton")) -> List[Impl]:
    """All implementations of ``problem`` ("mmd", "sinkhorn" or "coral"); baseline first."""
    f4 = 4.0
    skada = import_status("skada.deep.losses")
    pot = import_status("ot")
    geom = import_status("geomloss")
    out: List[Impl] = []
    if problem == "mmd":
        from adaptlib.losses import mmd

        dense = lambda n, m, d: f4 * _p2(n, m) * (2 * NUM_KERNELS + 4)  # noqa: E731
        auto = _auto_mem(dense, has_path_arg(mmd))
        out.append(Impl("adaptlib", problem, _adaptlib_mmd(None), auto, baseline=True))
        if has_path_arg(mmd):
            for p in include_paths:
                mem = dense if p == "dense" else _tiled_mem
                out.append(Impl(f"adaptlib path={p}", problem, _adaptlib_mmd(p), mem,
                                devices=("cuda",) if p == "triton" else ("cpu", "cuda")))
        bmem = lambda n, m, d: f4 * _p2(n, m) * (3.0 * d + NUM_KERNELS + 4)  # noqa: E731
        out.append(Impl("TLlib-style (broadcast)", problem, lambda x, y: ((lambda: tllib_style_mmd(x, y)), {}),
                        bmem, order=2.0))
        out.append(Impl("DeepDA-style (broadcast)", problem, lambda x, y: ((lambda: deepda_style_mmd(x, y)), {}),
                        bmem, order=2.0))
        tri = lambda n, m, d, k: f4 * (n * n + m * m + n * m) * (2 * k + 3)  # noqa: E731
        out.append(Impl("skada dan_loss (33 sigmas, default)", problem, _skada_dan(None),
                        lambda n, m, d: tri(n, m, d, 33), available=skada))
        out.append(Impl("skada dan_loss (5 sigmas)", problem, _skada_dan(5),
                        lambda n, m, d: tri(n, m, d, 5), available=skada))
        out.append(Impl("GeomLoss tensorized gaussian (1 bandwidth)", problem, _geomloss_gaussian("tensorized"),
                        lambda n, m, d: f4 * (n * n + m * m + n * m) * 4, available=geom))
        out.append(Impl("floor: 2 Gram matmuls + one exp (issue's floor)", problem, _floor_issue_mmd,
                        lambda n, m, d: f4 * _p2(n, m) * 2, floor=True))
        out.append(Impl("floor: Gram matmul (N+M)^2 D", problem, _floor_matmul_stacked,
                        lambda n, m, d: f4 * _p2(n, m), floor=True))
        out.append(Impl("floor: one exp over (N+M)^2", problem, _floor_exp(lambda n, m: (n + m, n + m)),
                        lambda n, m, d: 2 * f4 * _p2(n, m), floor=True))
    elif problem == "sinkhorn":
        from adaptlib.losses import sinkhorn

        dense = lambda n, m, d: f4 * n * m * 8  # noqa: E731
        auto = _auto_mem(dense, has_path_arg(sinkhorn))
        out.append(Impl("adaptlib", problem, _adaptlib_sinkhorn(None), auto, baseline=True))
        if has_path_arg(sinkhorn):
            for p in include_paths:
                mem = dense if p == "dense" else _tiled_mem
                out.append(Impl(f"adaptlib path={p}", problem, _adaptlib_sinkhorn(p), mem,
                                devices=("cuda",) if p == "triton" else ("cpu", "cuda")))
        out.append(Impl("POT sinkhorn2 (sinkhorn_knopp)", problem, _pot_sinkhorn("sinkhorn"),
                        lambda n, m, d: f4 * n * m * 6, available=pot))
        # sinkhorn_log keeps two (N, M) temporaries per iteration for autograd
        out.append(Impl("POT sinkhorn2 (sinkhorn_log)", problem, _pot_sinkhorn("sinkhorn_log"),
                        lambda n, m, d: f4 * n * m * (4 + 2 * ITER_GUESS.get((n, m, d), MAX_ITER)),
                        available=pot))
        for s in (0.5, 0.9):
            out.append(Impl(f"GeomLoss tensorized (scaling={s})", problem, _geomloss(s, "tensorized"),
                            lambda n, m, d: f4 * n * m * 10, available=geom))
        ok, why = pykeops_works() if geom[0] else geom
        out.append(Impl("GeomLoss online (KeOps)", problem, _geomloss(0.5, "online"),
                        lambda n, m, d: f4 * (n + m) * d * 10, available=(ok, why)))
        out.append(Impl("POT emd2 (exact OT, not entropic)", problem, _pot_emd,
                        lambda n, m, d: n * m * 48.0, available=pot, order=3.0))
        out.append(Impl("floor: cost matmul N M D", problem, _floor_matmul_cross,
                        lambda n, m, d: f4 * n * m, floor=True))
        out.append(Impl("floor: one exp over N M", problem, _floor_exp(lambda n, m: (n, m)),
                        lambda n, m, d: 2 * f4 * n * m, floor=True))
    elif problem == "coral":
        out.append(Impl("adaptlib", problem, _adaptlib_coral,
                        lambda n, m, d: f4 * (min(d, n + m) ** 2 * 4 + (n + m) * d * 4), baseline=True, order=1.0))
        out.append(Impl("skada deepcoral_loss", problem, _skada_coral,
                        lambda n, m, d: f4 * (d * d * 4 + (n + m) * d * 4), available=skada, order=1.0))
        out.append(Impl("floor: covariance matmul D^2 N", problem, _floor_cov,
                        lambda n, m, d: f4 * d * d, floor=True, order=1.0))
    else:
        raise ValueError(f"unknown problem {problem!r}")
    return out


# Sinkhorn iterations adaptlib needed per problem (filled by the benchmarks), used to estimate
# the memory of POT's log-domain solver, whose autograd graph grows with the iterations.
ITER_GUESS: Dict[Tuple[int, int, int], int] = {}


def sinkhorn_iterations(x: torch.Tensor, y: torch.Tensor) -> int:
    """Iterations adaptlib's dense Sinkhorn needs on this problem (no gradient)."""
    from adaptlib.losses import sinkhorn

    with torch.no_grad():
        n_iter = sinkhorn(x, y, epsilon=EPSILON, max_iter=MAX_ITER, tol=TOL).n_iter
    return n_iter


def fwd_bwd(run: Callable, x: torch.Tensor, y: torch.Tensor, floor: bool) -> Callable[[], None]:
    """Zero-argument step: forward, then backward to ``x`` and ``y`` (floors: forward only)."""
    if floor:
        return run

    def step():
        x.grad = None
        y.grad = None
        loss = run()
        loss.backward()

    return step


def time_once(step: Callable[[], None], sync: Callable[[], None] = lambda: None) -> float:
    sync()
    t0 = time.perf_counter()
    step()
    sync()
    return time.perf_counter() - t0


def fmt_bytes(b: float) -> str:
    return f"{b / GIB:.1f} GiB" if b >= 0.1 * GIB else f"{b / 1024 ** 2:.0f} MiB"
