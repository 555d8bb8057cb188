"""Parameter constraints shared by the estimators: one place per bound.

scikit-learn's ``_parameter_constraints`` of each estimator take the shared entries from
here, so ``image_size`` or ``on_error`` are validated the same way everywhere. A bound
that depends on the model (the input side must be at least the backbone's total stride)
is checked once, where the model is built
(:func:`codafeat.nn.backbone.check_input_size`).
"""

from __future__ import annotations

from numbers import Integral

import torch
from sklearn.utils._param_validation import Interval, StrOptions

from ._defaults import MAX_IMAGE_SIZE

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
