"""scikit-learn's estimator checks on the three estimators, where they apply.

The encoder's full list is in tests/test_encoder.py. The pretrainer and the segmenter learn
from images (and masks), not from the generic 2-d numeric arrays that most checks of
``sklearn.utils.estimator_checks`` feed to ``fit``. Those checks do not apply, and their
input tags say so (``two_d_array=False``). The checks below need no data, or test what
happens before any data is read: the constructor contract, cloning, ``get_params`` /
``set_params``, tags, parameter validation and not-fitted errors.
"""

from __future__ import annotations

import warnings

import pytest
from sklearn.utils import estimator_checks as ec

from codafeat import CodaEncoder, CodaPretrainer, CodaSegmenter

from helpers import DATA_FREE_CHECKS

#: The encoder's data-free checks (tests/test_encoder.py), plus parameter validation: every
#: invalid value is refused by fit, naming the parameter, before any data is read.
CHECKS = [*DATA_FREE_CHECKS, ec.check_param_validation]

ESTIMATORS = [
    CodaPretrainer(backbone="test_convnext", epochs=1),
    CodaSegmenter(backbone="test_convnext", epochs=1),
    CodaEncoder(backbone="test_convnext"),
]


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_sklearn_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(type(estimator).__name__, estimator)


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_unfitted_use_raises_not_fitted(estimator):
    from sklearn.exceptions import NotFittedError

    method = {"CodaPretrainer": "transform", "CodaSegmenter": "predict", "CodaEncoder": "transform"}[
        type(estimator).__name__
    ]
    with pytest.raises(NotFittedError):
        getattr(estimator, method)([])
