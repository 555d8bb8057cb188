"""A codafeat weights file in the tools you already use: plain timm and segmentation_models_pytorch
================================================================================================

Run it::

    python examples/timm_and_smp.py                        # a tiny random codafeat model, seconds
    python examples/timm_and_smp.py --weights my_coda.safetensors

A codafeat weights file is a timm checkpoint: timm loads it with no conversion (as a
classifier-free backbone, as a feature pyramid, with one input channel), and so does every
library that builds its encoders with timm, e.g. segmentation_models_pytorch's ``tu-``
encoders (``pip install segmentation-models-pytorch``; that part is skipped without it).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import timm
import torch

from codafeat import CodaEncoder


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None, help="codafeat weights file (default: a tiny random model)")
    args = parser.parse_args(argv)

    if args.weights is None:  # a stand-in for a trained model: same format, random values
        path = Path(tempfile.mkdtemp()) / "coda.safetensors"
        CodaEncoder(backbone="test_convnext", image_size=64, random_state=0).fit().save(path)
    else:
        path = Path(args.weights)
    encoder = CodaEncoder(weights=str(path)).fit()
    name = encoder.config_["backbone"]
    overlay = dict(file=str(path))

    # 1. plain timm: the pooled backbone, bit-exact with codafeat's
    backbone = timm.create_model(name, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        gap = (backbone(x) - encoder.model_.backbone(x)).abs().max().item()
    print(
        f"timm.create_model({name!r}, pretrained=True, num_classes=0, pretrained_cfg_overlay=dict(file=...)): "
        f"{backbone.num_features}-d features, max difference to codafeat {gap:.1e}"
    )

    # 2. a feature pyramid (U-Net encoders, detection necks), one input channel
    pyramid = timm.create_model(name, pretrained=True, features_only=True, in_chans=1, pretrained_cfg_overlay=overlay)
    with torch.no_grad():
        shapes = [tuple(f.shape[1:]) for f in pyramid(torch.rand(1, 1, 64, 64))]
    print(f"features_only=True, in_chans=1: feature maps {shapes}")
    result = {"timm_max_abs_difference": gap}

    # 3. segmentation_models_pytorch: a U-Net on the codafeat encoder
    try:
        import segmentation_models_pytorch as smp
    except ImportError:
        print("segmentation_models_pytorch is not installed: skipped (pip install segmentation-models-pytorch)")
        return result
    unet = smp.Unet(f"tu-{name}", encoder_weights=True, in_channels=3, classes=2, pretrained_cfg_overlay=overlay)
    stem = unet.encoder.model.stem_0.weight
    same = torch.equal(stem, encoder.model_.backbone.state_dict()["stem.0.weight"])
    with torch.no_grad():
        out = unet(torch.rand(1, 3, 64, 64))
    print(
        f"smp.Unet('tu-{name}', encoder_weights=True, pretrained_cfg_overlay=...): output {tuple(out.shape)}, "
        f"encoder weights from the file: {same}"
    )
    result["smp_encoder_matches"] = float(same)
    return result


if __name__ == "__main__":
    main()
