"""CodaTrainer.step against a plain re-derivation of the two objectives (both readings)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from codafeat._train.dist import DistInfo
from codafeat._train.loop import CodaTrainer, Schedules
from codafeat.losses.inter_organ import InterOrganLoss
from codafeat.losses.intra_organ import IntraOrganLoss
from codafeat.nn.coda_model import CodaNetwork
from codafeat.nn.ema import make_teacher

K, B, N = 32, 4, 2


def _trainer(symmetric: bool, seed: int = 0, **kw) -> CodaTrainer:
    torch.manual_seed(seed)
    student = CodaNetwork(
        "test_convnext", mean=(0.5,) * 3, std=(0.25,) * 3, head_out_dim=K, head_hidden_dim=16, head_bottleneck_dim=8
    )
    teacher = make_teacher(student)
    # A teacher unlike the student, so that pairing mistakes change the numbers.
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    steps = 3
    sched = Schedules(
        lr=np.full(steps, 1e-3),
        weight_decay=np.full(steps, 0.04),
        momentum=np.full(steps, 0.9),
        teacher_temp=np.full(1, 0.04),
    )
    intra = IntraOrganLoss(out_dim=K, student_temp=0.1, center_momentum=0.9)
    intra.center.copy_(0.1 * torch.randn(1, K))
    params = dict(lambda_inter=1.0, lambda_intra=1.0)
    params.update(kw)
    return CodaTrainer(
        student=student,
        teacher=teacher,
        inter_loss=InterOrganLoss(temperature=0.1),
        intra_loss=intra,
        schedules=sched,
        steps_per_epoch=steps,
        clip_grad=0.0,
        freeze_last_layer=0,
        device=torch.device("cpu"),
        dist_info=DistInfo(),
        n_local_crops=N,
        symmetric=symmetric,
        **params,
    )


def _batch(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "g1": torch.rand(B, 1, 32, 32, generator=g),
        "g2": torch.rand(B, 1, 32, 32, generator=g),
        "locals": torch.rand(N * B, 1, 32, 32, generator=g),
        "labels": torch.tensor([0, 0, 1, 1]),
        "index": torch.arange(B),
    }


def _ce(teacher_logits, student_logits, center, t_temp=0.04, s_temp=0.1):
    p = F.softmax((teacher_logits - center) / t_temp, dim=1)
    return -(p * F.log_softmax(student_logits / s_temp, dim=1)).sum(1).mean()


def _supcon_negatives(zs, zt, y, tau=0.1):
    """Paper Eq. 1 with explicit loops: -mean_i 1/|P(i)| sum_p log(exp(s_ip) / sum_n exp(s_in))."""
    zs, zt = F.normalize(zs, dim=1), F.normalize(zt, dim=1)
    total = 0.0
    for i in range(len(zs)):
        sims = [(zs[i] @ zt[j]) / tau for j in range(len(zt))]
        negs = torch.stack([sims[j] for j in range(len(zt)) if y[j] != y[i]])
        pos = [sims[j] for j in range(len(zt)) if y[j] == y[i]]
        total = total - sum(p - torch.logsumexp(negs, 0) for p in pos) / len(pos)
    return total / len(zs)


@torch.no_grad()
def _expected(tr: CodaTrainer, batch: dict[str, torch.Tensor]) -> tuple[float, float]:
    tr.student_module.train()
    g1, g2, crops, y = batch["g1"], batch["g2"], batch["locals"], batch["labels"]
    c = tr.intra_loss.center
    t1, t2 = tr.teacher(g1), tr.teacher(g2)
    s_g1 = tr.student_module.encoder(g1)
    s_g2 = tr.student_module.encoder(g2)
    s_crops = [tr.student_module.encoder(crops[k * B : (k + 1) * B]) for k in range(N)]
    h_org, h_ins = tr.student_module.head_org, tr.student_module.head_ins
    if not tr.symmetric:
        inter = _supcon_negatives(h_org(s_g1), t2[0], y)
        intra = sum(_ce(t2[1], h_ins(f), c) for f in s_crops) / N
        return float(inter), float(intra)
    inter = 0.5 * (_supcon_negatives(h_org(s_g1), t2[0], y) + _supcon_negatives(h_org(s_g2), t1[0], y))
    student_views = [s_g1, s_g2, *s_crops]
    terms = [_ce(t[1], h_ins(f), c) for v, f in enumerate(student_views) for w, t in enumerate((t1, t2)) if v != w]
    return float(inter), float(sum(terms) / len(terms))


@pytest.mark.parametrize("symmetric", [False, True])
def test_step_losses_match_a_plain_rederivation(symmetric):
    tr = _trainer(symmetric)
    batch = _batch()
    inter, intra = _expected(tr, batch)
    r = tr.step(batch, epoch=0, it=0)
    assert r.loss_inter == pytest.approx(inter, rel=1e-4)
    assert r.loss_intra == pytest.approx(intra, rel=1e-4)
    assert r.loss == pytest.approx(inter + intra, rel=1e-4)
    assert not r.inter_skipped


def test_the_two_readings_differ_and_symmetric_trains_on_g2():
    """In the paper's printed form the student never sees g2; in the symmetric form it does."""
    batch = _batch()
    seen = {}
    for symmetric in (False, True):
        tr = _trainer(symmetric)
        sizes: list[int] = []
        h = tr.student_module.encoder.register_forward_hook(lambda m, i, o, sizes=sizes: sizes.append(i[0].shape[0]))
        tr.step(batch, 0, 0)
        h.remove()
        seen[symmetric] = sizes
    assert seen[False] == [B, N * B]
    assert seen[True] == [2 * B, N * B]


def test_step_updates_student_teacher_and_centre():
    tr = _trainer(True)
    s0 = {k: v.clone() for k, v in tr.student_module.state_dict().items()}
    t0 = {k: v.clone() for k, v in tr.teacher.state_dict().items()}
    c0 = tr.intra_loss.center.clone()
    tr.step(_batch(), 0, 0)
    k = "encoder.backbone.stem.0.weight"
    assert not torch.equal(tr.student_module.state_dict()[k], s0[k])
    # EMA with m = 0.9: teacher = 0.9 * old teacher + 0.1 * new student.
    expected = 0.9 * t0[k] + 0.1 * tr.student_module.state_dict()[k]
    torch.testing.assert_close(tr.teacher.state_dict()[k], expected, rtol=1e-5, atol=1e-7)
    assert not torch.equal(tr.intra_loss.center, c0)


def test_single_organ_batch_skips_the_inter_term_without_nan():
    tr = _trainer(True)
    batch = dict(_batch(), labels=torch.zeros(B, dtype=torch.long))
    r = tr.step(batch, 0, 0)
    assert r.inter_skipped and r.loss_inter == 0.0 and np.isfinite(r.loss)


# --------------------------------------------------------------------------- GPU-path features, on the CPU
def _intra_only(**kw) -> CodaTrainer:
    return _trainer(True, lambda_inter=0.0, **kw)  # the intra-organ term is a mean over images: it splits exactly


def test_accumulation_equals_one_undivided_step_for_a_per_image_loss():
    batch = _batch()
    one, two = _intra_only(), _intra_only(accumulate_steps=2)
    r1, r2 = one.step(batch, 0, 0), two.step(batch, 0, 0)
    assert r1.loss_intra == pytest.approx(r2.loss_intra, rel=1e-5)
    for a, b in zip(one.student_module.parameters(), two.student_module.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(one.intra_loss.center, two.intra_loss.center)
    for a, b in zip(one.teacher.parameters(), two.teacher.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_micro_batches_keep_crops_with_their_images():
    tr = _trainer(True, accumulate_steps=2)
    batch = _batch()
    parts = tr._micro_batches(batch)
    assert [len(p["g1"]) for p in parts] == [2, 2]
    crops = batch["locals"].view(N, B, 1, 32, 32)
    for p, lo in zip(parts, (0, 2)):
        torch.testing.assert_close(p["locals"].view(N, 2, 1, 32, 32), crops[:, lo : lo + 2])
        assert p["labels"].tolist() == batch["labels"][lo : lo + 2].tolist()


def test_compiled_step_matches_eager():
    batch = _batch()
    eager, compiled = _trainer(True), _trainer(True, compile="eager")
    r1, r2 = eager.step(batch, 0, 0), compiled.step(batch, 0, 0)
    assert r1.loss == pytest.approx(r2.loss, rel=1e-5)
    assert compiled.student is not compiled.student_module, "the compiled callable wraps the bare module"
    assert type(compiled.student_module) is CodaNetwork, "EMA and checkpoints keep the bare module"


def test_epoch_records_the_data_wait_share():
    tr = _trainer(True)
    rec = tr.run_epoch([_batch(1), _batch(2), _batch(3)], 0)
    assert 0.0 <= rec["data_wait_share"] < 1.0


def test_fp32_last_layer_under_autocast():
    from codafeat.nn.heads import DINOHead

    x = torch.randn(3, 16)
    for fp32, dtype in ((False, torch.bfloat16), (True, torch.float32)):
        head = DINOHead(16, out_dim=32, hidden_dim=8, bottleneck_dim=4, last_layer_fp32=fp32)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert head(x).dtype == dtype


@pytest.mark.parametrize("symmetric", [False, True])
def test_koleo_term_is_the_student_bottlenecks_spread_per_global_view(symmetric):
    from losses.test_koleo import _reference

    tr = _trainer(symmetric, koleo_weight=0.5)
    batch = _batch()
    inter, intra = _expected(tr, batch)
    with torch.no_grad():
        tr.student_module.train()
        views = (batch["g1"], batch["g2"]) if symmetric else (batch["g1"],)
        z = [tr.student_module.head_ins(tr.student_module.encoder(v), return_bottleneck=True)[1] for v in views]
        koleo = float(np.mean([_reference(v.numpy()) for v in z]))
    r = tr.step(batch, epoch=0, it=0)
    assert r.loss_koleo == pytest.approx(koleo, rel=1e-4)
    assert r.loss == pytest.approx(inter + intra + 0.5 * koleo, rel=1e-4)
    assert r.loss_intra == pytest.approx(intra, rel=1e-4), "the other terms are unchanged"


def test_koleo_weight_changes_the_update_and_is_recorded_per_epoch():
    batch = _batch()
    plain, spread = _trainer(True), _trainer(True, koleo_weight=1.0)
    plain.step(batch, epoch=0, it=0)
    spread.step(batch, epoch=0, it=0)
    a = torch.cat([p.flatten() for p in plain.student_module.head_ins.mlp.parameters()])
    b = torch.cat([p.flatten() for p in spread.student_module.head_ins.mlp.parameters()])
    assert not torch.allclose(a, b), "the KoLeo term has a gradient into the intra-organ head"
    record = spread.run_epoch([batch, batch], epoch=0)
    assert np.isfinite(record["loss_koleo"]) and "loss_koleo" not in plain.run_epoch([batch], epoch=0)
