"""Parameter constraints shared by the estimators: one place per bound.

scikit-learn's ``_parameter_constraints`` of each estimator take the shared entries from
here, so ``image_size`` or ``on_error`` are validated the same way everywhere. A bound
that depends on the model (the input side must be at least the backbone's total stride)
is checked once, where the model is built
(:func:`codafeat.nn.backbone.check_input_size`).
"""

from __future__ import annotations

import os
from numbers import Integral, Real
from typing import Any

import torch
from sklearn.utils._param_validation import Interval, StrOptions

from .._defaults import MAX_IMAGE_SIZE

#: An input side in pixels (the model's stride is checked when it is built).
IMAGE_SIDE = Interval(Integral, 1, MAX_IMAGE_SIZE, closed="both")
#: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a torch.device (see codafeat._device).
DEVICE = [str, torch.device]
#: What to do with an unreadable image.
ON_ERROR = [StrOptions({"raise", "skip"})]
#: DataLoader workers for inference.
NUM_WORKERS = [Interval(Integral, 0, 1024, closed="both"), StrOptions({"auto"})]
#: Images per forward pass.
BATCH_SIZE = [Interval(Integral, 1, 1_000_000, closed="both")]
#: A fixed bit depth of integer images of more than 8 bits, or ``None`` (see codafeat.data.io).
BIT_DEPTH = [None, Interval(Integral, 9, 32, closed="both")]


def constraints(accepts: tuple) -> list:
    """scikit-learn's constraint list of a :class:`~codafeat._defaults.PretrainParam` ``accepts`` spec.

    Examples
    --------
    >>> none, interval = constraints(("none", ("int", 1, 64)))
    >>> none, interval.type.__name__, interval.left, interval.right
    (None, 'Integral', 1, 64)
    >>> constraints((("options", "folder", "dicom"),))[0].options == {"folder", "dicom"}
    True
    """
    from ..formats.weights import Weights  # same layer; imported here so that importing this module stays light

    tokens: dict[str, list] = {
        "str": [str],
        "none": [None],
        "path": [os.PathLike],
        "dict": [dict],
        "seq": [tuple, list],
        "bool": ["boolean"],
        "weights": [Weights],
        "device": list(DEVICE),
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "image_side": [IMAGE_SIDE],
        "bit_depth": list(BIT_DEPTH),
        "on_error": list(ON_ERROR),
    }
    out: list[Any] = []
    for item in accepts:
        if isinstance(item, str):
            if item not in tokens:
                raise ValueError(f"unknown parameter type {item!r}; one of {sorted(tokens)}")
            out.extend(tokens[item])
        elif item[0] == "int":
            out.append(Interval(Integral, item[1], item[2], closed="both"))
        elif item[0] == "real":
            out.append(Interval(Real, item[1], item[2], closed=item[3]))
        elif item[0] == "options":
            out.append(StrOptions(set(item[1:])))
        else:
            raise ValueError(f"unknown parameter range {item!r}")
    return out


def draw_seed(random_state: Any) -> int:
    """One seed in ``[0, 2**31 - 1)`` drawn from ``random_state`` (an int, a ``RandomState`` or ``None``).

    The one place where codafeat turns scikit-learn's ``random_state`` into a torch seed.

    Examples
    --------
    >>> draw_seed(0) == draw_seed(0), 0 <= draw_seed(None) < 2**31 - 1
    (True, True)
    """
    from sklearn.utils import check_random_state

    return int(check_random_state(random_state).randint(0, 2**31 - 1))
