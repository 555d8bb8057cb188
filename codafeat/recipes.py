"""Named CodaPretrainer settings: the paper's, and one that learns on small compute.

``CodaPretrainer()`` with no arguments is the paper's recipe (ConvNeXt-B, 224 px, 12 crops
of 96 px, 65,536-way heads, 800 epochs, EMA momentum 0.996 -> 1): it needs GPUs and days.
On a laptop CPU or a few GPU hours those settings barely move the EMA teacher, and the
intra-organ branch distils nearly uniform targets. The ``small`` recipe is the one the demo
and ``benchmarks/reproduce.py`` use. The sizes (backbone, views, crops, heads, batch, epochs)
are budget choices carried over from the CPU runs before it. ``symmetric`` and
``momentum_teacher`` were chosen by an ablation on training images only
(``benchmarks/recipe_ablation.py``, table in ``benchmarks/RESULTS.md``, "Small-compute
recipe"). DINOv2's KoLeo term, adopted once because it made the intra-organ loss fall, was
re-decided by transfer (``benchmarks/transfer.py``: linear probe and fine-tuning on the dev
tasks and on a within-organ task of the training images): it gained nothing there, so the
recipe keeps the paper's objective (``koleo_weight=0``), one departure fewer; the monitor
shows no collapse without it on real radiographs. ``drop_path_rate=0`` was not ablated.

Examples
--------
>>> from codafeat import CodaPretrainer
>>> from codafeat.recipes import get_recipe
>>> params = get_recipe("small", epochs=2)
>>> params["backbone"], params["momentum_teacher"], params["koleo_weight"], params["epochs"]
('convnext_atto', 0.99, 0.0, 2)
>>> CodaPretrainer(**params).momentum_teacher
0.99
"""

from __future__ import annotations

from typing import Any

__all__ = ["RECIPES", "get_recipe"]

#: ``name -> CodaPretrainer parameters`` (parameters not listed keep their defaults).
RECIPES: dict[str, dict[str, Any]] = {
    # The defaults of CodaPretrainer: the paper's values, DINO's where the paper is silent.
    "paper": {},
    # CPU-sized (a few minutes per epoch on 2 cores for a few thousand images).
    "small": dict(
        backbone="convnext_atto",  # 3.4 M parameters instead of ConvNeXt-B's 88 M
        image_size=64,  # global views; the cache holds 73-px images
        local_size=32,
        n_local_crops=4,
        batch_size=32,  # more steps per epoch than 64 at the same cost
        epochs=8,
        lr=1e-3,  # small backbone, few steps
        warmup_epochs=1,
        head_out_dim=4096,
        head_hidden_dim=512,
        head_bottleneck_dim=128,
        drop_path_rate=0.0,  # a 3.4 M-parameter model trained for minutes underfits
        symmetric=True,  # ablation: kNN / NMI up, intra-organ loss lower
        momentum_teacher=0.99,  # ablation: 0.996 barely moves the teacher in a few hundred steps
        koleo_weight=0.0,  # the paper's objective: KoLeo 0.1 did not transfer better (transfer.py)
    ),
}


def get_recipe(name: str, **overrides: Any) -> dict[str, Any]:
    """A copy of the recipe ``name``, with ``overrides`` replacing or adding parameters.

    Raises
    ------
    ValueError
        If ``name`` is not one of :data:`RECIPES`.

    Examples
    --------
    >>> get_recipe("small", epochs=3)["epochs"]
    3
    """
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}")
    return {**RECIPES[name], **overrides}
