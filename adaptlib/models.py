"""The one model skeleton every method trains: backbone -> optional bottleneck -> classifier head.

Methods never change this skeleton; they only add their own modules (a domain
discriminator, say) beside it. That keeps comparisons between methods fair: the same
network, the same budget, only the objective differs.
"""
from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Iterator, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ModelOutput", "AdaptModel", "mlp", "lenet", "RandomAffine", "affine_images", "DomainDiscriminator"]


@dataclass(frozen=True)
class ModelOutput:
    """What :class:`AdaptModel` returns for a batch of ``N`` inputs.

    Attributes:
        features: ``(N, F)`` features fed to the classifier head (the bottleneck output when
            there is a bottleneck, else the backbone output). Alignment losses act on these.
        logits: ``(N, C)`` unnormalised class scores.
    """

    features: Tensor
    logits: Tensor


def mlp(in_dim: int, hidden: Sequence[int], *, dropout: float = 0.0) -> nn.Sequential:
    """A multi-layer perceptron ``Linear -> ReLU -> Dropout`` per hidden width.

    Args:
        in_dim: input dimension ``D``; inputs are ``(N, D)`` float tensors.
        hidden: widths of the hidden layers; the output has ``hidden[-1]`` features.
        dropout: dropout probability after each activation (0 disables it).

    Raises:
        ValueError: ``in_dim`` or a width is not a positive integer, ``hidden`` is empty, or
            ``dropout`` is outside ``[0, 1)``.
    """
    if int(in_dim) <= 0:
        raise ValueError(f"in_dim must be a positive integer, got {in_dim!r}")
    hidden = list(hidden)
    if not hidden or any(int(h) <= 0 for h in hidden):
        raise ValueError(f"hidden must be a non-empty list of positive widths, got {hidden!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    layers: list[nn.Module] = []
    width = int(in_dim)
    for h in hidden:
        layers += [nn.Linear(width, int(h)), nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = int(h)
    return nn.Sequential(*layers)


def lenet(image_shape: Tuple[int, int, int] = (1, 28, 28), *, channels: Tuple[int, int] = (20, 50),
          hidden: int = 500, dropout: float = 0.5) -> nn.Sequential:
    """The LeNet encoder of ADDA (Tzeng et al., CVPR 2017) for images given as flattened rows.

    ``Unflatten -> Conv 5x5 (c1) -> MaxPool 2 -> ReLU -> Conv 5x5 (c2) -> Dropout2d -> MaxPool 2 ->
    ReLU -> Flatten -> Linear(hidden) -> ReLU -> Dropout``: with the defaults, 28x28 grey images
    give 20x24x24, 20x12x12, 50x8x8, 50x4x4 = 800 values, then 500 features (LeCun et al.,
    Proc. IEEE 1998; the 20/50/500 widths of Caffe's and ADDA's LeNet). Put it in an
    :class:`AdaptModel` with a bottleneck and the head (its last ``nn.Linear`` gives
    ``backbone_dim = hidden``).

    Args:
        image_shape: ``(C, H, W)`` of one image. Inputs are ``(N, C*H*W)`` float rows (as the
            :class:`~adaptlib.datasets.Domain` s of ``digits-images`` hold them) or ``(N, C, H, W)``.
        channels: output channels ``(c1, c2)`` of the two convolutions.
        hidden: width of the fully connected layer (the backbone's output width).
        dropout: probability of ``Dropout2d`` after the second convolution and of ``Dropout``
            after the fully connected layer (0 disables both).

    Raises:
        ValueError: a non-positive size or width, an image smaller than 16x16 (nothing would be
            left after two 5x5 convolutions and two poolings), or ``dropout`` outside ``[0, 1)``.
    """
    c, h, w = (int(v) for v in image_shape)
    c1, c2 = (int(v) for v in channels)
    if min(c, h, w, c1, c2, int(hidden)) <= 0:
        raise ValueError(f"image_shape, channels and hidden must be positive, got {image_shape!r}, {channels!r}, {hidden!r}")
    if h < 16 or w < 16:
        raise ValueError(f"image_shape must be at least 16x16 for two 5x5 convolutions and two poolings, got {image_shape!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    out_h, out_w = ((h - 4) // 2 - 4) // 2, ((w - 4) // 2 - 4) // 2
    layers: list[nn.Module] = [_ToImage((c, h, w)),
                               nn.Conv2d(c, c1, 5), nn.MaxPool2d(2), nn.ReLU(inplace=True), nn.Conv2d(c1, c2, 5)]
    if dropout > 0:
        layers.append(nn.Dropout2d(dropout))
    layers += [nn.MaxPool2d(2), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(c2 * out_h * out_w, int(hidden)),
               nn.ReLU(inplace=True)]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def affine_images(images: Tensor, angle: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """Rotate, scale and shift each image of a batch about its centre (bilinear, zero fill).

    Output pixel ``p`` takes the input value at ``A p / scale - shift`` with
    ``A = [[cos(angle), -sin(angle)], [sin(angle), cos(angle)]]``, in pixel coordinates about the
    image centre with ``x`` to the right and ``y`` down: the content is rotated counter-clockwise
    on screen by ``angle``, magnified by ``scale`` and moved by ``shift``. Pixels that come from outside the image are 0
    (black: the background of ``digits-images``). Sampling is :func:`torch.nn.functional.grid_sample`
    (bilinear, ``align_corners=False``), so integer shifts and multiples of 90 degrees are exact.

    Args:
        images: ``(N, C, H, W)`` floating-point images.
        angle: ``(N,)`` rotations in **radians**, counter-clockwise as displayed (row 0 at the top).
        scale: ``(N,)`` positive magnifications (``> 1`` enlarges the content).
        shift: ``(N, 2)`` shifts ``(dx, dy)`` in **pixels**, ``dx`` to the right, ``dy`` down.

    Returns:
        ``(N, C, H, W)`` transformed images, same dtype and device; differentiable in ``images``.

    Raises:
        ValueError: ``images`` is not a 4-d floating-point tensor, or a parameter has the wrong
            shape or a non-positive ``scale``.
    """
    if images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"images must be a (N, C, H, W) floating-point tensor, got {tuple(images.shape)} {images.dtype}")
    n, _, h, w = images.shape
    if tuple(angle.shape) != (n,) or tuple(scale.shape) != (n,) or tuple(shift.shape) != (n, 2):
        raise ValueError(f"angle and scale must be ({n},) and shift ({n}, 2), got {tuple(angle.shape)}, "
                         f"{tuple(scale.shape)}, {tuple(shift.shape)}")
    if bool((scale <= 0).any()):
        raise ValueError("scale must be positive")
    angle, scale, shift = (t.to(device=images.device, dtype=images.dtype) for t in (angle, scale, shift))
    # In grid_sample's normalised coordinates [-1, 1] a pixel is 2/W wide and 2/H high. Work in pixel
    # units (isotropic), then convert: u_in = A u_out / scale - shift. With y pointing down, this A turns
    # the content counter-clockwise on screen (tests: torch.rot90 for quarter turns).
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    a = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (N, 2, 2), pixel units
    to_norm = images.new_tensor([2.0 / w, 2.0 / h])
    theta_lin = a * to_norm[None, :, None] / to_norm[None, None, :]  # diag(to_norm) A diag(1/to_norm)
    theta_shift = -shift * to_norm  # (N, 2)
    theta = torch.cat([theta_lin, theta_shift[:, :, None]], dim=2)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class RandomAffine(nn.Module):
    """Training-time augmentation of images given as rows: a random rotation, scale and shift per image.

    In training mode each image of the batch gets its own angle uniform in ``[-degrees, degrees]``,
    magnification uniform in ``[scale[0], scale[1]]`` and shift uniform in ``[-translate,
    translate]`` times the image width (``dx``) and height (``dy``), applied by
    :func:`affine_images`; in eval mode it is the identity, as dropout. The draws use torch's
    global generator (the :class:`~adaptlib.Trainer` seeds it), on the input's device. A method
    that stacks source and target (:meth:`~adaptlib.methods.Method.forward_source_target`)
    augments both domains; evaluation and validators (eval mode) see the images as they are.
    The random affine transform of LeNet-style digit recipes (e.g. Simard et al., ICDAR 2003;
    ``torchvision.transforms.RandomAffine`` has the same parameters).

    Args:
        image_shape: ``(C, H, W)`` of one image. Inputs are ``(N, C*H*W)`` rows (returned as rows)
            or ``(N, C, H, W)`` images (returned as images).
        degrees: largest rotation, in degrees (``>= 0``).
        translate: largest shift, as a fraction of the image size (``[0, 1)``).
        scale: ``(low, high)`` magnification range (a tuple or list), ``0 < low <= high``.

    Raises:
        ValueError: a parameter outside its range; at call time, an input of another shape.
    """

    def __init__(self, image_shape: Tuple[int, int, int], *, degrees: float = 0.0, translate: float = 0.0,
                 scale: Tuple[float, float] = (1.0, 1.0)) -> None:
        super().__init__()
        self.to_image = _ToImage(tuple(int(v) for v in image_shape))  # type: ignore[arg-type]
        if not (isinstance(degrees, (int, float)) and 0.0 <= float(degrees) <= 180.0):
            raise ValueError(f"degrees must be a number in [0, 180], got {degrees!r}")
        if not (isinstance(translate, (int, float)) and 0.0 <= float(translate) < 1.0):
            raise ValueError(f"translate must be a fraction in [0, 1), got {translate!r}")
        try:
            low, high = (float(v) for v in scale)
        except (TypeError, ValueError):
            raise ValueError(f"scale must be a (low, high) pair of numbers, got {scale!r}") from None
        if not (0.0 < low <= high) or not math.isfinite(high):
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale!r}")
        self.degrees, self.translate, self.scale = float(degrees), float(translate), (low, high)

    def forward(self, x: Tensor) -> Tensor:
        images = self.to_image(x)
        if not self.training or (self.degrees == 0 and self.translate == 0 and self.scale == (1.0, 1.0)):
            return x
        n, _, h, w = images.shape
        u = torch.rand(n, 4, device=x.device)
        angle = (2 * u[:, 0] - 1) * math.radians(self.degrees)
        scale = self.scale[0] + (self.scale[1] - self.scale[0]) * u[:, 1]
        shift = (2 * u[:, 2:] - 1) * self.translate * torch.tensor([float(w), float(h)], device=x.device)
        out = affine_images(images, angle, scale, shift)
        return out.reshape(x.shape)

    def extra_repr(self) -> str:
        return f"shape={self.to_image.shape}, degrees={self.degrees:g}, translate={self.translate:g}, scale={self.scale}"


class _ToImage(nn.Module):
    """``(N, C*H*W)`` rows -> ``(N, C, H, W)`` images; ``(N, C, H, W)`` inputs pass unchanged."""

    def __init__(self, shape: Tuple[int, int, int]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4 and tuple(x.shape[1:]) == self.shape:
            return x
        size = self.shape[0] * self.shape[1] * self.shape[2]
        if x.dim() != 2 or x.shape[1] != size:
            raise ValueError(f"input must be (N, {size}) rows or (N, {', '.join(map(str, self.shape))}) images, "
                             f"got {tuple(x.shape)}")
        return x.view(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


def _infer_out_features(module: nn.Module) -> Optional[int]:
    declared = getattr(module, "output_dim", None)  # a backbone that states its width (SentenceEncoder)
    if isinstance(declared, int) and not isinstance(declared, bool) and declared > 0:
        return declared
    for m in reversed(list(module.modules())):
        if isinstance(m, nn.Linear):
            return m.out_features
    return None


class AdaptModel(nn.Module):
    """Backbone, optional bottleneck and linear classifier head: ``x -> g(x) -> b(g(x)) -> h``.

    The bottleneck (``Linear -> ReLU``, as in DANN/DAN implementations, or ``Linear ->
    BatchNorm1d -> ReLU`` with ``bottleneck_norm=True``, as in TLlib and SHOT) gives every
    method the same low-dimensional feature space to align.

    Args:
        backbone: any ``nn.Module`` mapping inputs ``(N, ...)`` to ``(N, backbone_dim)``
            features (an :func:`mlp` for feature benchmarks, a CNN for images).
        num_classes: number of classes ``C`` of the head.
        backbone_dim: output width of ``backbone``; when omitted, the backbone's ``output_dim``
            attribute if it has one (:class:`~adaptlib.backbones.SentenceEncoder`), else the
            width of its last ``nn.Linear``.
        bottleneck_dim: width ``F`` of the bottleneck, or ``None`` for no bottleneck (then
            ``F = backbone_dim``).
        dropout: dropout applied after the bottleneck activation.
        bottleneck_norm: put a ``BatchNorm1d(F)`` between the bottleneck's ``Linear`` and its
            ``ReLU``. In training mode it normalises each feature over the batch (a method that
            stacks source and target, :meth:`Method.forward_source_target`, normalises them
            together) and updates running statistics; in eval mode it uses those. Training
            batches then need at least 2 samples. Needs a bottleneck.

    Raises:
        ValueError: ``num_classes < 2``, ``backbone_dim`` cannot be inferred, or
            ``bottleneck_norm`` without a bottleneck (``bottleneck_dim=None``).

    Example:
        >>> model = AdaptModel(mlp(800, [256]), num_classes=10, bottleneck_dim=128)
        >>> out = model(torch.randn(4, 800))
        >>> out.features.shape, out.logits.shape
        (torch.Size([4, 128]), torch.Size([4, 10]))
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        *,
        backbone_dim: Optional[int] = None,
        bottleneck_dim: Optional[int] = 256,
        dropout: float = 0.0,
        bottleneck_norm: bool = False,
    ) -> None:
        super().__init__()
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes!r}")
        if backbone_dim is None:
            backbone_dim = _infer_out_features(backbone)
            if backbone_dim is None:
                raise ValueError(
                    "backbone_dim could not be inferred (the backbone has no nn.Linear): pass it"
                )
        self.backbone = backbone
        self.num_classes = int(num_classes)
        if bottleneck_norm and bottleneck_dim is None:
            raise ValueError("bottleneck_norm=True needs a bottleneck: pass bottleneck_dim (or bottleneck_norm=False)")
        self.bottleneck_norm = bool(bottleneck_norm)
        if bottleneck_dim is None:
            self.bottleneck: nn.Module = nn.Identity()
            self.feature_dim = int(backbone_dim)
        else:
            layers: list[nn.Module] = [nn.Linear(int(backbone_dim), int(bottleneck_dim))]
            if bottleneck_norm:
                layers.append(nn.BatchNorm1d(int(bottleneck_dim)))
            layers.append(nn.ReLU(inplace=True))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            self.bottleneck = nn.Sequential(*layers)
            self.feature_dim = int(bottleneck_dim)
        self.head = nn.Linear(self.feature_dim, self.num_classes)

    def forward(self, x: Tensor) -> ModelOutput:
        features = self.bottleneck(self.backbone(x))
        return ModelOutput(features=features, logits=self.head(features))

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the backbone (what fine-tuning may freeze or pull toward a prior)."""
        return self.backbone.parameters()

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the bottleneck and the classifier head."""
        yield from self.bottleneck.parameters()
        yield from self.head.parameters()


class DomainDiscriminator(nn.Module):
    """Domain classifier of DANN (Ganin et al., JMLR 2016): features ``(N, F)`` -> logits ``(N, 1)``.

    ``Linear(F, H) -> ReLU -> Dropout -> Linear(H, H) -> ReLU -> Dropout -> Linear(H, 1)``; the
    logit is the log-odds that a sample comes from the source domain.

    Args:
        in_dim: feature width ``F``.
        hidden_dim: hidden width ``H``.
        dropout: dropout after each hidden activation.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 256, *, dropout: float = 0.5) -> None:
        super().__init__()
        self.net = nn.Sequential(mlp(in_dim, [hidden_dim, hidden_dim], dropout=dropout), nn.Linear(hidden_dim, 1))

    def forward(self, features: Tensor) -> Tensor:
        return self.net(features)
