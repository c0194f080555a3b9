"""Random affine augmentation of training images (RandomAffine, affine_images) and the ``augment``
recipe field: known answers for the transform, training-only behaviour, ranges, and the plumbing
through CompareConfig, build_model, the CLI and the journal."""
from __future__ import annotations

import json
import math

import pytest
import torch

import adaptlib.models as models
from adaptlib.cli import main
from adaptlib.compare import JOURNAL_FILE, CompareConfig, build_model, read_journal
from adaptlib.datasets.digit_images import load_digit_images
from adaptlib.models import RandomAffine, affine_images


def impulse(h=9, w=11, row=2, col=3, n=1):
    x = torch.zeros(n, 1, h, w)
    x[:, 0, row, col] = 1.0
    return x


def test_integer_shift_moves_a_pixel_exactly():
    y = affine_images(impulse(), torch.zeros(1), torch.ones(1), torch.tensor([[3.0, 2.0]]))  # 3 right, 2 down
    assert torch.nonzero(y[0, 0] > 0.999).tolist() == [[4, 6]]
    assert y.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_quarter_turn_is_rot90_counter_clockwise_and_zero_parameters_are_the_identity():
    x = torch.rand(3, 2, 8, 8, dtype=torch.float64)
    turned = affine_images(x, torch.full((3,), math.pi / 2, dtype=torch.float64), torch.ones(3), torch.zeros(3, 2))
    assert torch.allclose(turned, torch.rot90(x, 1, dims=(2, 3)), atol=1e-12)
    same = affine_images(x, torch.zeros(3), torch.ones(3), torch.zeros(3, 2))
    assert same.dtype == torch.float64 and torch.allclose(same, x, atol=1e-12)


def test_scale_two_magnifies_about_the_centre():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 3:5, 3:5] = 1.0  # the central 2x2 block
    y = affine_images(x, torch.zeros(1), torch.tensor([2.0]), torch.zeros(1, 2))
    assert torch.nonzero(y[0, 0] > 0.5).tolist() == [[r, c] for r in range(2, 6) for c in range(2, 6)]


def test_each_image_gets_its_own_parameters_and_gradients_flow():
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64, requires_grad=True)
    angle, scale, shift = torch.tensor([0.3, -0.2]), torch.tensor([1.1, 0.9]), torch.tensor([[0.5, -1.0], [2.0, 0.0]])
    y = affine_images(x, angle, scale, shift)
    alone = affine_images(x[1:], angle[1:], scale[1:], shift[1:])
    assert torch.allclose(y[1:], alone)
    assert torch.autograd.gradcheck(lambda t: affine_images(t, angle, scale, shift), (x,))


def test_affine_images_errors():
    x = torch.rand(2, 1, 6, 6)
    with pytest.raises(ValueError, match="images must be"):
        affine_images(torch.rand(2, 36), torch.zeros(2), torch.ones(2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="shift"):
        affine_images(x, torch.zeros(2), torch.ones(2), torch.zeros(2))
    with pytest.raises(ValueError, match="scale must be positive"):
        affine_images(x, torch.zeros(2), torch.tensor([1.0, 0.0]), torch.zeros(2, 2))


def test_random_affine_is_the_identity_in_eval_mode_and_keeps_rows_as_rows():
    aug = RandomAffine((1, 28, 28), degrees=15, translate=0.1, scale=(0.9, 1.1))
    rows = torch.rand(5, 784)
    assert aug.eval()(rows) is rows
    out = aug.train()(rows)
    assert out.shape == rows.shape and not torch.allclose(out, rows)
    images = rows.view(5, 1, 28, 28)
    assert aug(images).shape == images.shape
    with pytest.raises(ValueError, match=r"\(N, 784\)"):
        aug(torch.rand(5, 100))


def test_random_affine_draws_within_its_ranges_and_is_seeded(monkeypatch):
    seen = []

    def spy(images, angle, scale, shift):
        seen.append((angle, scale, shift))
        return images

    monkeypatch.setattr(models, "affine_images", spy)
    aug = RandomAffine((1, 20, 10), degrees=12, translate=0.2, scale=(0.8, 1.25)).train()
    torch.manual_seed(3)
    aug(torch.rand(4000, 200))
    angle, scale, shift = seen[0]
    assert angle.abs().max() <= math.radians(12) and angle.abs().max() > 0.95 * math.radians(12)
    assert scale.min() >= 0.8 and scale.max() <= 1.25 and scale.max() - scale.min() > 0.4
    assert shift[:, 0].abs().max() <= 0.2 * 10 + 1e-6 and shift[:, 1].abs().max() <= 0.2 * 20 + 1e-6
    assert shift[:, 1].abs().max() > 3.8  # dy spans the height's range, dx the width's
    # One draw per image: float32 uniforms repeat only by chance (about 0.5 pairs expected in 4000).
    assert len(set(angle.tolist())) > 3990
    torch.manual_seed(3)
    aug(torch.rand(4000, 200))
    assert all(torch.equal(a, b) for a, b in zip(seen[0], seen[1]))


@pytest.mark.parametrize("kwargs, match", [
    (dict(degrees=-1), "degrees"), (dict(degrees=200), "degrees"), (dict(translate=1.0), "translate"),
    (dict(translate=-0.1), "translate"), (dict(scale=(1.2, 1.1)), "scale"), (dict(scale=(0.0, 1.0)), "scale"),
    (dict(scale=1.1), "scale"),
])
def test_random_affine_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RandomAffine((1, 28, 28), **kwargs)


def test_augmented_digits_keep_their_ink_and_their_label_readable(data_root):
    """Real MNIST digits under the recipe grid's strongest setting: the ink stays in the frame."""
    digits = load_digit_images("mnist", root=data_root, n=200)
    aug = RandomAffine((1, 28, 28), degrees=20, translate=0.2, scale=(0.8, 1.2)).train()
    torch.manual_seed(0)
    out = aug(digits.x)
    ink_before, ink_after = digits.x.sum(1), out.sum(1)
    ratio = ink_after / ink_before
    # Scale s changes the ink by about s**2 (0.64..1.44); a shift of up to 20 % crops little of a
    # digit that sits in MNIST's central 20x20 box.
    assert ratio.min() > 0.5 and ratio.max() < 1.5, (ratio.min(), ratio.max())
    assert out.min() >= -1e-6 and out.max() <= 1 + 1e-6  # bilinear: a convex combination of [0, 1] values and 0


def test_the_recipe_field_builds_the_augmentation_in_front_of_an_image_backbone():
    cfg = CompareConfig(benchmark="digits-images", augment={"degrees": 10, "translate": 0.1,
                                                            "scale": (0.9, 1.1)}).resolved()
    assert cfg.augment == {"degrees": 10, "translate": 0.1, "scale": [0.9, 1.1]}
    model = build_model(cfg, 784, 10)
    assert isinstance(model.backbone[0], RandomAffine) and model.backbone[0].scale == (0.9, 1.1)
    assert not any(isinstance(m, RandomAffine) for m in build_model(
        CompareConfig(benchmark="digits-images", augment={}).resolved(), 784, 10).modules())
    with pytest.raises(ValueError, match="augment needs an image backbone"):
        CompareConfig(benchmark="office-caltech10-surf", augment={"degrees": 5}).resolved()
    with pytest.raises(ValueError, match=r"augment: unknown \['rotate'\]"):
        CompareConfig(benchmark="digits-images", augment={"rotate": 5}).resolved()
    with pytest.raises(ValueError, match="augment: translate"):
        CompareConfig(benchmark="digits-images", augment={"translate": 2}).resolved()
    with pytest.raises(ValueError, match="augment must be a mapping"):
        CompareConfig(benchmark="digits-images", augment=[10]).resolved()


def test_cli_augment_option_errors(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["compare", "digits-images", "--augment", "{degrees: 10}"])
    assert "--augment" in capsys.readouterr().err
    rc = main(["compare", "office-caltech10-surf", "--augment", '{"degrees": 10}', "--quiet",
               "--output", str(tmp_path / "out")])
    assert rc == 2 and "augment needs an image backbone" in capsys.readouterr().err


def test_a_journal_written_before_the_augment_field_is_read_as_no_augmentation(data_root, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["compare", "office-caltech10-surf", "--methods", "source-only", "--tasks", "D->W", "--seeds", "1",
            "--steps", "3", "--workers", "1", "--quiet", "--root", str(data_root), "--output", str(out)]
    assert main(argv) == 0
    capsys.readouterr()
    journal = out / JOURNAL_FILE
    entries = [json.loads(line) for line in journal.read_text().splitlines()]
    assert all(e["settings"]["augment"] == {} for e in entries)
    for e in entries:
        del e["settings"]["augment"]  # as written before the field existed
    journal.write_text("".join(json.dumps(e) + "\n" for e in entries))
    config = CompareConfig(methods=("source-only",), tasks=("D->W",), seeds=1, steps=3, workers=1,
                           root=str(data_root)).resolved()
    assert len(read_journal(journal, config)) == 1


def test_a_study_trains_the_recipes_augmentation_and_can_turn_it_off(monkeypatch, data_root):
    from adaptlib.studies import StudyError, execute_run, parse_study
    from adaptlib.studies import run as study_run

    head = f'name = "x"\nbenchmark = "digits-images"\ntasks = ["U->M"]\nmethods = ["source-only"]\nroot = "{data_root}"\n'
    spec = parse_study(head + 'steps = 2\ncheckpoint_every = 2\nvalidators = ["source-accuracy"]\n')
    assert spec.network["augment"] == CompareConfig(benchmark="digits-images").resolved().augment != {}
    built = []
    monkeypatch.setattr(study_run, "build_model", lambda *a, **k: built.append(build_model(*a, **k)) or built[-1])
    result = execute_run(spec.runs()[0])
    assert result.status == "ok", result.error
    assert isinstance(built[0].backbone[0], RandomAffine)
    assert "augment" not in parse_study(head + "[network]\naugment = {}\n").network
    with pytest.raises(StudyError, match="network.augment.*image backbone"):
        parse_study('name = "x"\nbenchmark = "office-caltech10-surf"\n[network]\naugment = {degrees = 5}\n')
