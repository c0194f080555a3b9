"""Multi-process training: two CPU processes on gloo, started by torchrun.

One ``torchrun --nproc_per_node=2`` run of ``tests/_distributed_worker.py`` computes, on each
rank, (a) a global MMD through ``all_gather_with_grad`` on unequal per-rank batches, (b) two
10-step Trainer runs (DANN global, DAN local), (c) local and global alignment losses of
DAN, Deep CORAL and DANN on fixed batches. The tests compare the ranks with each other and
with single-process computations here.
"""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from adaptlib.distributed import all_gather_with_grad, average_gradients, is_distributed, rank, world_size
from adaptlib.losses import coral, mmd
from adaptlib.methods import DAN, get_method

sys.path.insert(0, str(Path(__file__).parent))
import _distributed_worker as worker  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
W = 2


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """What each of the two torchrun processes computed: a list ``[rank0, rank1]`` of dicts."""
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with the gloo backend is not available in this torch build")
    out = tmp_path_factory.mktemp("distributed")
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", str(REPO / "tests" / "_distributed_worker.py"), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(W)]


# --------------------------------------------------------------------- (a) all_gather_with_grad
def test_gathered_mmd_and_gradients_match_one_process(ranks):
    xs, xt, theta, *_ = worker.problem()
    xs, xt = xs.clone().requires_grad_(True), xt.clone().requires_grad_(True)
    value = mmd(xs, xt, bandwidths=worker.BANDWIDTHS)
    gs, gt = torch.autograd.grad(value, (xs, xt))
    for r, res in enumerate(ranks):
        assert res["world_size"] == W
        g = res["gather"]
        torch.testing.assert_close(g["mmd"], value.detach(), rtol=1e-12, atol=1e-14)
        # the convention: rank r's input gradient is W times its rows of the one-process gradient
        torch.testing.assert_close(g["grad_source"], W * gs[worker.rows(worker.SOURCE_ROWS, r)], rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(g["grad_target"], W * gt[worker.rows(worker.TARGET_ROWS, r)], rtol=1e-10, atol=1e-14)
        # labels (no grad) are gathered in rank order with unequal sizes
        assert g["labels"].tolist() == list(range(5)) + [100 + i for i in range(7)]


def test_gradient_averaging_gives_the_global_batch_gradient(ranks):
    """Through a shared parameter: average over ranks of the gathered loss's gradient = one-process gradient."""
    xs, xt, theta, *_ = worker.problem()
    p = theta.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(mmd(xs @ p, xt @ p, bandwidths=worker.BANDWIDTHS), p)
    for res in ranks:
        torch.testing.assert_close(res["gather"]["theta_grad"], expected, rtol=1e-10, atol=1e-14)


# --------------------------------------------------------------------- (b) Trainer
@pytest.mark.parametrize("name", ["dann", "dan"])
def test_two_process_training_keeps_ranks_identical(ranks, name):
    a, b = (res["train"][name] for res in ranks)
    for key in ("model", "method"):
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (name, key, k)
    # rank 1 started from other weights: the broadcast replaced them by rank 0's, then training moved them
    assert not all(torch.equal(a["initial"][k], b["initial"][k]) for k in a["initial"])
    assert not all(torch.equal(a["initial"][k], a["model"][k]) for k in a["initial"])
    # logged losses are averaged over ranks and evaluation is sharded then summed: same history
    assert a["train"] == b["train"] and len(a["train"]) == 2
    assert a["eval"] == b["eval"] and len(a["eval"]) == 2
    if name == "dann":
        assert len(a["method"]) > 0  # the discriminator is synchronised too


def test_ranks_draw_different_batches(ranks):
    assert not torch.equal(ranks[0]["train"]["first_batch"], ranks[1]["train"]["first_batch"])


# --------------------------------------------------------------------- (c) local vs global
def test_global_alignment_is_the_global_batch_estimator_and_local_is_not(ranks):
    *_, fs, ft, ys = worker.problem()
    b = worker.BATCH
    parts = [(fs[r * b:(r + 1) * b], ft[r * b:(r + 1) * b]) for r in range(W)]
    one_process = {
        "dan": lambda s, t: mmd(s, t, multipliers=(1.0,), heuristic="median", estimator="biased"),
        "coral": coral,
    }
    for name, loss in one_process.items():
        global_value = loss(fs, ft)
        local_mean = sum(loss(s, t) for s, t in parts) / W
        for res in ranks:  # "global": every rank holds the estimator of the whole batch of W * B rows
            torch.testing.assert_close(res["scope"][f"global/{name}"], global_value, rtol=1e-5, atol=1e-7)
        for r, res in enumerate(ranks):  # "local": each rank its own batch's estimator
            torch.testing.assert_close(res["scope"][f"local/{name}"], loss(*parts[r]), rtol=1e-5, atol=1e-7)
        # what the averaged gradients follow under "local" is the mean of per-rank estimators: another estimator
        assert abs(float(local_mean) - float(global_value)) > 1e-3 * abs(float(global_value)), name
    # DANN's domain loss is a mean over rows: with equal batches, local (averaged) and global coincide
    local_dann = sum(res["scope"]["local/dann"] for res in ranks) / W
    for res in ranks:
        torch.testing.assert_close(res["scope"]["global/dann"], local_dann, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------- one process: unchanged
def test_single_process_is_the_identity():
    assert not is_distributed() and rank() == 0 and world_size() == 1
    x = torch.randn(4, 3, requires_grad=True)
    assert all_gather_with_grad(x) is x
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.full((2,), 3.0)
    average_gradients([p])
    assert p.grad.tolist() == [3.0, 3.0]
    method = DAN(alignment="global")
    fs, ft = torch.randn(4, 3), torch.randn(5, 3)
    assert all(a is b for a, b in zip(method.gather(fs, ft), (fs, ft)))
    assert method.hparams()["alignment"] == "global"


def test_alignment_option_is_validated():
    for name in ("dann", "dan", "deep-coral", "deepjdot", "sinkhorn"):
        assert get_method(name, alignment="global").alignment == "global"
        with pytest.raises(ValueError, match="alignment"):
            get_method(name, alignment="everywhere")
    with pytest.raises(TypeError, match="expects a tensor"):
        all_gather_with_grad([1.0, 2.0])
    with pytest.raises(ValueError, match="dimensions"):
        all_gather_with_grad(torch.tensor(1.0))


# --------------------------------------------------------------------- the documented script, both ways
_LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
               "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID")


def _documented_script(tmp_path, data_root) -> Path:
    """The train.py of docs/distributed.md, verbatim except a 10-step budget."""
    text = (REPO / "docs" / "distributed.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    assert "# train.py" in code and "steps=1000" in code
    path = tmp_path / "train.py"
    path.write_text(code.replace("steps=1000", "steps=10"))
    return path


def _env(data_root):
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_ENV}
    env.update(OMP_NUM_THREADS="1", ADAPTLIB_DATA=str(data_root),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return env


def test_documented_script_runs_unchanged_in_one_process(tmp_path, data_root):
    script = _documented_script(tmp_path, data_root)
    proc = subprocess.run([sys.executable, str(script)], env=_env(data_root), capture_output=True, text=True,
                          timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "target/accuracy" in proc.stdout and "RANK" not in proc.stderr


def test_documented_script_runs_under_torchrun(tmp_path, data_root):
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with the gloo backend is not available in this torch build")
    script = _documented_script(tmp_path, data_root)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", str(script)]
    proc = subprocess.run(cmd, env=_env(data_root), capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("target/accuracy") == 1  # printed by rank 0 only


def test_init_process_group_without_a_launcher(monkeypatch):
    from adaptlib import distributed

    for name in _LAUNCH_ENV:
        monkeypatch.delenv(name, raising=False)
    assert distributed.init_process_group("gloo") is False
    assert not dist.is_initialized() and distributed.rank() == 0 and distributed.world_size() == 1
    distributed.destroy_process_group()  # a no-op
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match=r"sets \['RANK'\] but not \['WORLD_SIZE'\]"):
        distributed.init_process_group("gloo")
