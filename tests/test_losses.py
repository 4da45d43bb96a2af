"""losses.py against float64 brute-force sums written here, plus the properties SPEC section 4 names."""
import math

import pytest
import torch
import torch.nn.functional as F

import losses as L


def brute_kl(p_logits, q_logits, T, mask=None):
    """T^2 * mean over counted positions of sum_v p (log p - log q), with explicit loops, in float64."""
    B, S, V = p_logits.shape
    total, count = 0.0, 0
    for b in range(B):
        for t in range(S):
            if mask is not None and not mask[b, t]:
                continue
            zp = [float(z) / T for z in p_logits[b, t]]
            zq = [float(z) / T for z in q_logits[b, t]]
            lse_p = math.log(sum(math.exp(z) for z in zp))
            lse_q = math.log(sum(math.exp(z) for z in zq))
            total += sum(math.exp(a - lse_p) * ((a - lse_p) - (c - lse_q)) for a, c in zip(zp, zq))
            count += 1
    return T * T * total / count


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 7, generator=g) * 2, torch.randn(2, 3, 7, generator=g) * 2


@pytest.mark.parametrize("T", [1.0, 2.0])
def test_kls_match_float64_brute_force(logits, T):
    s, t = logits
    mask = torch.tensor([[True, False, True], [True, True, False]])
    assert L.forward_kl(s, t, T).item() == pytest.approx(brute_kl(t, s, T), rel=1e-5)
    assert L.reverse_kl(s, t, T).item() == pytest.approx(brute_kl(s, t, T), rel=1e-5)
    assert L.reverse_kl(s, t, T, mask).item() == pytest.approx(brute_kl(s, t, T, mask), rel=1e-5)
    assert L.forward_kl(s, t, T, mask).item() == pytest.approx(brute_kl(t, s, T, mask), rel=1e-5)


def test_forward_kl_matches_torch_kl_div(logits):
    s, t = logits
    want = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="sum") / 6
    torch.testing.assert_close(L.forward_kl(s, t), want)


def test_kl_of_a_distribution_with_itself_is_zero_and_directions_differ(logits):
    s, t = logits
    assert L.forward_kl(s, s).abs().item() < 1e-6 and L.reverse_kl(t, t, 2.0).abs().item() < 1e-6
    assert abs(L.forward_kl(s, t).item() - L.reverse_kl(s, t).item()) > 1e-3


def test_temperature_scaling_is_t_squared_times_the_kl_of_scaled_logits(logits):
    s, t = logits
    torch.testing.assert_close(L.reverse_kl(s, t, 2.0), 4 * L.reverse_kl(s / 2, t / 2, 1.0))


def test_masked_positions_change_neither_value_nor_gradient(logits):
    s, t = logits
    mask = torch.tensor([[True, False, True], [False, True, True]])
    s2 = s.clone()
    s2[~mask] = 1e4  # huge values where masked
    a, b = s.clone().requires_grad_(), s2.clone().requires_grad_()
    va, vb = L.reverse_kl(a, t, 2.0, mask), L.reverse_kl(b, t, 2.0, mask)
    torch.testing.assert_close(va, vb)
    va.backward(), vb.backward()
    torch.testing.assert_close(a.grad[mask], b.grad[mask])
    assert (b.grad[~mask] == 0).all()


def test_value_invariant_to_duplicating_the_batch_and_normalizer(logits):
    s, t = logits
    v = L.reverse_kl(s, t)
    torch.testing.assert_close(L.reverse_kl(torch.cat([s, s]), torch.cat([t, t])), v)
    torch.testing.assert_close(L.reverse_kl(s, t, normalizer=2) * 2, v * 6)  # kd-norm batch: divide by B
    full = L.reverse_kl(s, t)  # chunks with a shared normaliser add up to the whole
    parts = L.reverse_kl(s[:, :2], t[:, :2], normalizer=6) + L.reverse_kl(s[:, 2:], t[:, 2:], normalizer=6)
    torch.testing.assert_close(parts, full)


def test_gradcheck_float64_tiny_vocab():
    """The library functions themselves, in float64 end to end (they compute in fp64 for fp64 inputs)."""
    g = torch.Generator().manual_seed(1)
    s = torch.randn(2, 3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    t = torch.randn(2, 3, 5, dtype=torch.float64, generator=g)
    mask = torch.tensor([[True, False, True], [True, True, True]])
    assert torch.autograd.gradcheck(lambda x: L.reverse_kl(x, t, 2.0, mask), (s,))
    assert torch.autograd.gradcheck(lambda x: L.forward_kl(x, t, 2.0, mask), (s,))
    assert torch.autograd.gradcheck(lambda x: L.kd_loss(x, [t, t.flip(-1)], "rv", 2.0, 1.0, fused=False), (s,))


def test_reverse_kl_seeks_one_mode_forward_covers_both():
    """A unimodal student (a discretised Gaussian: mean, width) fitted to a bimodal teacher."""
    V = 12
    v = torch.arange(V).float()
    target = torch.full((1, 1, V), -8.0)
    target[0, 0, 2] = target[0, 0, 9] = 3.0
    near = {}
    for name, fn in (("fw", L.forward_kl), ("rv", L.reverse_kl)):
        mu, log_sigma = torch.tensor(3.5, requires_grad=True), torch.tensor(0.0, requires_grad=True)
        opt = torch.optim.Adam([mu, log_sigma], lr=0.05)
        for _ in range(800):
            z = (-(v - mu) ** 2 / (2 * log_sigma.exp() ** 2)).view(1, 1, V)
            opt.zero_grad()
            fn(z, target).backward()
            opt.step()
        p = z.detach().softmax(-1)[0, 0]
        near[name] = (p[1:4].sum().item(), p[8:11].sum().item())  # mass around each mode
    assert min(near["fw"]) > 0.15  # mass-covering: both modes get mass
    assert max(near["rv"]) > 0.95 and min(near["rv"]) < 0.01  # mode-seeking: one mode only


def test_cross_entropy_ignores_index_and_matches_manual():
    z = torch.randn(2, 4, 9)
    y = torch.randint(0, 9, (2, 4))
    y[1, 3] = -100
    manual = -sum(F.log_softmax(z[b, t], -1)[y[b, t]] for b in range(2) for t in range(4) if y[b, t] >= 0) / 7
    torch.testing.assert_close(L.cross_entropy(z, y), manual)


def test_mix_logits_has_no_gradient_through_the_student_target(logits):
    s, t = logits
    s = s.clone().requires_grad_()
    mixed = L.mix_logits(t, s, 0.9)
    torch.testing.assert_close(mixed, 0.9 * t + 0.1 * s.detach())
    assert not mixed.requires_grad
    L.reverse_kl(s, mixed).backward()
    # the analytic gradient of KL(q || p) for a fixed p: q (log q - log p - KL) / N per position, N = 6
    log_q, log_p = F.log_softmax(s.detach(), -1), F.log_softmax(mixed, -1)
    kl = (log_q.exp() * (log_q - log_p)).sum(-1, keepdim=True)
    torch.testing.assert_close(s.grad, log_q.exp() * (log_q - log_p - kl) / 6, atol=1e-6, rtol=1e-5)


def test_lambda_schedule_for_six_epochs():
    got = [L.lambda_schedule(e, 6) for e in range(6)]
    assert got == pytest.approx([0.9, 0.75, 0.6, 0.45, 0.3, 0.3])


def test_two_teacher_combinations(logits):
    s, t1 = logits
    t2 = t1.flip(-1)
    mean_kl = (L.reverse_kl(s, t1, 2.0) + L.reverse_kl(s, t2, 2.0)) / 2
    torch.testing.assert_close(L.kd_loss(s, [t1, t2], "rv", 2.0, combine="kl"), mean_kl)
    torch.testing.assert_close(L.kd_loss(s, [t1, t2], "fw", 2.0, combine="logits"),
                               L.forward_kl(s, (t1 + t2) / 2, 2.0))
    lam = 0.6
    torch.testing.assert_close(L.kd_loss(s, [t1], "rv", 2.0, lam=lam),
                               L.reverse_kl(s, lam * t1 + (1 - lam) * s, 2.0))
    with pytest.raises(ValueError, match="unknown objective"):
        L.kd_loss(s, [t1], "kl")


@pytest.mark.parametrize("objective,combine,n", [("fw", "logits", 2), ("rv", "kl", 2), ("rv", "kl", 1),
                                                 ("rv", "logits", 2)])
def test_fused_path_equals_reference_and_passes_gradcheck(objective, combine, n, monkeypatch):
    monkeypatch.setattr(L, "BLOCK_ELEMS", 64 * 11)  # blocks of 64 rows
    g = torch.Generator().manual_seed(3)
    s = (3 * torch.randn(2, 70, 11, generator=g)).requires_grad_()  # 140 rows: blocks of 64 and a ragged one
    ts = [3 * torch.randn(2, 70, 11, generator=g) for _ in range(n)]
    mask = torch.rand(2, 70, generator=g) > 0.3
    for lam in (1.0, 0.7):  # with mixing, the target holds the student's logits as a constant (stop-gradient)
        fused = L.kd_loss(s, ts, objective, 2.0, lam, combine, mask, fused=True)
        ref = L.kd_loss(s, ts, objective, 2.0, lam, combine, mask, fused=False)
        gf, = torch.autograd.grad(fused, s)
        gr, = torch.autograd.grad(ref, s)
        torch.testing.assert_close(fused, ref, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(gf, gr, atol=1e-7, rtol=1e-5)
    s64 = s.detach()[:, :3, :5].double().requires_grad_()
    t64 = [t[:, :3, :5].double() for t in ts]
    assert torch.autograd.gradcheck(lambda x: L.kd_loss(x, t64, objective, 2.0, 1.0, combine, fused=True), (s64,))


def test_fused_cross_entropy_equals_reference_and_passes_gradcheck(monkeypatch):
    monkeypatch.setattr(L, "BLOCK_ELEMS", 64 * 13)  # 140 rows: blocks of 64 and a ragged one
    z = (3 * torch.randn(2, 70, 13)).requires_grad_()
    y = torch.randint(0, 13, (2, 70))
    y[0, :9] = -100
    a, b = L.cross_entropy(z, y, fused=True), L.cross_entropy(z, y)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(torch.autograd.grad(a, z)[0], torch.autograd.grad(b, z)[0])
    z64 = z.detach()[:, :4].double().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: L.cross_entropy(x, y[:, :4], fused=True), (z64,))


def test_hybrid_interpolates_between_forward_and_reverse(logits):
    s, t = logits
    fw, rv = L.forward_kl(s, t, 2.0).item(), L.reverse_kl(s, t, 2.0).item()
    for w in (0.0, 0.3, 1.0):
        got = L.kd_loss(s, [t], "hybrid", 2.0, rv_weight=w).item()
        assert got == pytest.approx(w * rv + (1 - w) * fw, rel=1e-5)
        assert min(fw, rv) - 1e-6 <= got <= max(fw, rv) + 1e-6


def test_skew_kl_matches_brute_force_and_reduces_to_kl(logits):
    s, t = logits
    assert L.skew_kl(s, t, skew=0.0).item() == pytest.approx(L.forward_kl(s, t).item(), rel=1e-6)
    assert L.skew_kl(s, t, skew=0.0, reverse=True).item() == pytest.approx(L.reverse_kl(s, t).item(), rel=1e-6)
    p, q = t.double().softmax(-1), s.double().softmax(-1)
    m = 0.1 * p + 0.9 * q  # forward skew KL(p || 0.1 p + 0.9 q)
    want = (p * (p.log() - m.log())).sum(-1).mean().item()
    assert L.skew_kl(s, t, skew=0.1).item() == pytest.approx(want, rel=1e-5)
    assert L.kd_loss(s, [t], "sfkl", 1.0, skew=0.1).item() == pytest.approx(want, rel=1e-5)


def test_alternate_switches_on_schedule():
    assert [L.alternate_objective(s, 0) for s in range(4)] == ["fw", "rv", "fw", "rv"]
    assert [L.alternate_objective(s, 0, period=2) for s in range(6)] == ["fw", "fw", "rv", "rv", "fw", "fw"]
    assert [L.alternate_objective(99, e, by="epoch") for e in range(3)] == ["fw", "rv", "fw"]


@pytest.mark.parametrize("fused", [False, True])
def test_gradients_survive_fp16_until_the_loss_scale(fused):
    """Sharp fp16 logits put most of the vocabulary at probability ~1e-9, below fp16's smallest subnormal
    (6e-8); times a loss scale of 2^16 those gradients are representable. Both paths keep the gradient in
    fp32 until the scale is applied (the readable one computes in fp32 from a cast the scaled gradient passes
    back through; the fused one stores it in fp32), so they come out as an exact computation rounded to fp16."""
    g = torch.Generator().manual_seed(0)
    z = (8 * torch.randn(1, 4, 50, generator=g)).half().requires_grad_()
    t = (8 * torch.randn(1, 4, 50, generator=g)).half()
    y = torch.randint(0, 50, (1, 4), generator=g)
    for loss_fn in (lambda x: L.kd_loss(x, [t], "fw", 1.0, normalizer=1, fused=fused),
                    lambda x: L.cross_entropy(x, y, normalizer=1, fused=fused)):
        z.grad = None
        (loss_fn(z) * 2 ** 16).backward()
        ref = z.detach().float().requires_grad_()
        (loss_fn(ref) * 2 ** 16).backward()  # the fp32 reference, scaled alike
        want = ref.grad.half()
        assert (want != 0).sum() > (ref.grad.abs() > 2 ** 16 * 6e-8).sum()  # small ones the scale rescues
        assert torch.equal(z.grad != 0, want != 0)
        torch.testing.assert_close(z.grad.float(), want.float(), rtol=2e-3, atol=6e-8)
