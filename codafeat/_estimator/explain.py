"""Class activation maps of a fine-tuned network: what it looks at, at each image's own size.

:func:`activation_maps` runs a method of pytorch-grad-cam (Grad-CAM and its relatives; the
``explain`` extra) on a network that takes ``(B, 1, H, W)`` images in [0, 1] and returns
``(B, n_outputs)`` (:class:`~codafeat.nn.linear_head.LinearHeadNet`), on the layer that makes
the last feature map (a ConvNeXt's last stage) or one the caller names, and resizes every map
back to its image's size: the model saw the image squeezed to a square, the user sees it as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.io import decode_image
from .infer import decode_to_tensor

#: ``method`` -> the pytorch-grad-cam class that computes it.
CAM_METHODS = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "hirescam": "HiResCAM",
    "layercam": "LayerCAM",
    "xgradcam": "XGradCAM",
    "eigencam": "EigenCAM",
}


def _cam_class(method: str) -> Any:
    if method not in CAM_METHODS:
        raise ValueError(f"method must be one of {sorted(CAM_METHODS)}, got {method!r}")
    try:
        import pytorch_grad_cam
    except ImportError as exc:
        raise ImportError('activation maps need pytorch-grad-cam: pip install "codafeat[explain]"') from exc
    return getattr(pytorch_grad_cam, CAM_METHODS[method])


def target_layer(model: nn.Module, layer: str | None) -> nn.Module:
    """The module whose activations the map weighs: ``layer`` (a dotted name in ``model``), or the
    backbone's last stage (timm CNNs such as ConvNeXt, whose last stage makes the last feature map).

    Raises
    ------
    ValueError
        ``layer`` names no module of ``model``, or the backbone has no stages and no layer is named.
    """
    if layer is not None:
        try:
            return model.get_submodule(layer)
        except AttributeError:
            names = [n for n, _ in model.named_modules() if n.count(".") <= 3][:12]
            raise ValueError(f"layer {layer!r} is not a module of the network; e.g. {names}") from None
    stages = getattr(getattr(getattr(model, "encoder", None), "backbone", None), "stages", None)
    if stages is None or not len(stages):
        raise ValueError(
            "this backbone has no stages to take the last feature map from; name the layer, "
            "e.g. layer='encoder.backbone.<module>'"
        )
    return stages[-1]


class _Output:
    """pytorch-grad-cam's target: one output of the network (a class logit or a regression output)."""

    def __init__(self, index: int) -> None:
        self.index = int(index)

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return output[..., self.index]


def activation_maps(
    model: nn.Module,
    items: Sequence[Any],
    outputs: Sequence[int] | None,
    *,
    image_size: int,
    method: str = "gradcam",
    layer: str | None = None,
    batch_size: int = 16,
    bit_depth: int | None = None,
    device: torch.device | str = "cpu",
) -> list[np.ndarray]:
    """One map per image, float32 in [0, 1] at the image's own ``(h, w)``.

    ``outputs[i]`` is the network output whose evidence image ``i``'s map shows (``None``:
    each image's largest output, the predicted class).
    """
    cam_class = _cam_class(method)
    x, _, _ = decode_to_tensor(
        items,
        int(image_size),
        on_error="raise",
        num_workers=0,
        batch_size=batch_size,
        bit_depth=bit_depth,
        dtype=torch.float32,
    )
    sizes = [decode_image(items[i], bit_depth=bit_depth).shape[:2] for i in range(len(items))]
    was_training = model.training
    model.eval()
    layer_module = target_layer(model, layer)
    maps: list[np.ndarray] = []
    try:
        with cam_class(model=model, target_layers=[layer_module]) as cam:
            for start in range(0, len(items), batch_size):
                batch = x[start : start + batch_size].to(device)
                if outputs is None:
                    with torch.no_grad():
                        chosen = model(batch).argmax(1).tolist()
                else:
                    chosen = list(outputs[start : start + batch_size])
                grey = cam(input_tensor=batch, targets=[_Output(j) for j in chosen])
                for k, heat in enumerate(np.asarray(grey, dtype=np.float32)):
                    h, w = sizes[start + k]
                    t = torch.from_numpy(heat)[None, None]
                    maps.append(F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy())
    finally:
        model.train(was_training)
    return [np.clip(m, 0.0, 1.0) for m in maps]
