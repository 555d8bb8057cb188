"""Coda's objective (codafeat/_train/objective.py): which terms, their named losses, their sum."""

from __future__ import annotations

import pytest
import torch

from codafeat._train.dist import DistInfo
from codafeat._train.loop import EpochStats, StepResult
from codafeat._train.objective import CodaObjective, StepOutputs, Terms
from codafeat.losses.inter_organ import InterOrganLoss
from codafeat.losses.intra_organ import IntraOrganLoss
from codafeat.nn.coda_model import NetworkOutputs

B, K, N = 4, 16, 2


@pytest.mark.parametrize(
    ("weights", "terms"),
    [((1, 1, 0), (True, True, False)), ((0, 1, 0.1), (False, True, True)), ((2, 0, 0), (True, False, False))],
)
def test_the_weights_decide_the_terms_once(weights, terms):
    assert Terms.from_weights(*weights) == Terms(*terms)


def test_impossible_term_sets_are_refused_by_name():
    with pytest.raises(ValueError, match="both 0: nothing to train"):
        Terms.from_weights(0.0, 0.0)
    with pytest.raises(ValueError, match="koleo_weight=0.5 acts on the intra-organ head"):
        Terms.from_weights(1.0, 0.0, 0.5)


def _outputs(symmetric: bool, seed: int = 0) -> StepOutputs:
    g = torch.Generator().manual_seed(seed)
    n_t = 2 if symmetric else 1
    n_s = N + 2 if symmetric else N
    teacher = NetworkOutputs(torch.randn(n_t * B, 8, generator=g), torch.randn(n_t * B, K, generator=g))
    student = NetworkOutputs(
        torch.randn(n_t * B, 8, generator=g), torch.randn(n_s * B, K, generator=g), torch.randn(n_t * B, 4, generator=g)
    )
    return StepOutputs(teacher, student)


def _objective(lambda_inter=1.0, lambda_intra=1.0, koleo_weight=0.0, symmetric=True) -> CodaObjective:
    return CodaObjective(
        inter_loss=InterOrganLoss(temperature=0.1),
        intra_loss=IntraOrganLoss(out_dim=K),
        lambda_inter=lambda_inter,
        lambda_intra=lambda_intra,
        koleo_weight=koleo_weight,
        symmetric=symmetric,
        n_local_crops=N,
        dist_info=DistInfo(),
        device=torch.device("cpu"),
    )


@pytest.mark.parametrize("symmetric", [False, True])
def test_named_losses_of_the_terms_that_are_on_and_their_weighted_sum(symmetric):
    labels = torch.tensor([0, 0, 1, 1])
    out = _outputs(symmetric)
    full, _ = _objective(0.5, 2.0, 0.25, symmetric)(out, labels, 0.04)
    assert set(full) == {"loss", "loss_inter", "loss_intra", "loss_koleo"}
    expected = 0.5 * full["loss_inter"] + 2.0 * full["loss_intra"] + 0.25 * full["loss_koleo"]
    torch.testing.assert_close(full["loss"], expected)
    inter_only, _ = _objective(1.0, 0.0, 0.0, symmetric)(out, labels, 0.04)
    assert set(inter_only) == {"loss", "loss_inter"}
    torch.testing.assert_close(inter_only["loss_inter"], full["loss_inter"])
    intra_only, _ = _objective(0.0, 1.0, 0.0, symmetric)(out, labels, 0.04)
    assert set(intra_only) == {"loss", "loss_intra"} and torch.equal(intra_only["loss"], intra_only["loss_intra"])


def test_a_single_organ_batch_skips_the_inter_term_and_the_epoch_mean_leaves_it_out():
    objective = _objective()
    losses, skipped = objective(_outputs(True), torch.zeros(B, dtype=torch.long), 0.04)
    assert skipped and float(losses["loss_inter"]) == 0.0
    stats = EpochStats()
    stats.add(StepResult({"loss": 1.0, "loss_inter": 0.0}, inter_skipped=True), B)
    stats.add(StepResult({"loss": 3.0, "loss_inter": 2.0, "loss_new_term": 5.0}), B)
    means = stats.means()
    assert means["loss"] == 2.0 and means["loss_inter"] == 2.0 and means["loss_new_term"] == 5.0
    assert means["loss_intra"] != means["loss_intra"], "a term never reported is NaN in the history"
    assert stats.inter_skipped_steps == 1


def test_the_centre_is_the_intra_organ_loss_and_moves_only_with_that_term():
    on, off = _objective(), _objective(lambda_intra=0.0)
    assert off.center is None and off.state() == {} and not off.needs_crops
    before = on.center.clone()
    on.update(torch.randn(B, K))
    assert not torch.equal(on.center, before) and on.state()["intra_center"] is on.center
    probs = on.intra_loss.teacher_probs(torch.randn(3, K), 0.04)
    torch.testing.assert_close(probs.sum(1), torch.ones(3))
    torch.testing.assert_close(on.intra_loss.teacher_log_probs(torch.zeros(1, K), 0.04).exp().sum(), torch.tensor(1.0))
