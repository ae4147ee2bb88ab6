"""ECD_q1 (training/core/ecd.py) against an independent numpy implementation of the equations and its exact
properties: unit speed, the closed-form step, skipped steps, bit-identical resume, descent on a convex
quadratic, and the Noether charge on the rotation-invariant sombrero toy (arXiv 2601.22257);
the step-size matching of baselines (arXiv 2601.22257) against known answers."""
import copy
import io
import math

import numpy as np
import pytest
import torch

from training.core.ecd import ECD, eta_prior
from training.studies.step_matching import calibrate_lr, median_step_norm, step_norms
from training.core.errors import UserError


# ---------------------------------------------------------------------------- helpers
def quad_problem(seed=0, sizes=(5, 3)):
    """Two parameter tensors and a convex quadratic F = ½ Σ xᵀA x + bᵀx + 1 over their concatenation."""
    g = torch.Generator().manual_seed(seed)
    d = sum(sizes)
    m = torch.randn(d, d, generator=g, dtype=torch.float64)
    A = m @ m.T / d + 0.5 * torch.eye(d, dtype=torch.float64)
    b = torch.randn(d, generator=g, dtype=torch.float64)
    params = [torch.nn.Parameter(torch.randn(n, generator=g, dtype=torch.float64)) for n in sizes]

    def loss_fn():
        x = torch.cat([p.reshape(-1) for p in params])
        return 0.5 * x @ A @ x + b @ x + 1.0
    return params, loss_fn, A, b


def closure_for(opt, loss_fn):
    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss
    return closure


def numpy_ecd(xs, grad_fn, loss_fn, steps, lr, eta, F0, projection):
    """The ECD_q1 update (evasilverstein/symmetry-breaking-files, optimizers/ECD_q1_scaled.py) on a list of numpy arrays (ν = 0), written independently."""
    d = sum(x.size for x in xs)
    lr_s = lr / math.sqrt(eta)
    kappa = 0.5 * lr_s * eta * d / (d - 1)
    p, p2 = None, 1.0
    out = []
    for _ in range(steps):
        g, F = grad_fn(xs), loss_fn(xs)
        if p is None:
            n = math.sqrt(sum(float(np.sum(gi * gi)) for gi in g))
            p = [-gi / n for gi in g]
        c = math.sqrt(1.0 / p2)
        p = [pi * c for pi in p]
        if projection == "global":
            dot = sum(float(np.sum(pi * gi)) for pi, gi in zip(p, g))
            p = [pi - kappa / (F - F0) * (gi - pi * dot) for pi, gi in zip(p, g)]
        else:
            p = [pi - kappa / (F - F0) * (gi - pi * float(np.sum(pi * gi))) for pi, gi in zip(p, g)]
        pn = math.sqrt(sum(float(np.sum(pi * pi)) for pi in p))
        xs = [x + lr_s * pi for x, pi in zip(xs, p)]
        p2 = pn * pn
        out.append([x.copy() for x in xs])
    return out


# ---------------------------------------------------------------------------- interface
def test_step_without_closure_is_a_clear_error():
    params, _, _, _ = quad_problem()
    opt = ECD(params)
    with pytest.raises(UserError, match="closure"):
        opt.step()


@pytest.mark.parametrize("kwargs,msg", [({"eta": 0}, "eta"), ({"projection": "x"}, "projection"), ({"nu": -1}, "nu")])
def test_bad_hyperparameters_are_refused(kwargs, msg):
    params, _, _, _ = quad_problem()
    with pytest.raises(UserError, match=msg):
        ECD(params, **kwargs)


@pytest.mark.parametrize("projection", ["per_tensor", "global"])
def test_matches_independent_numpy_implementation(projection):
    params, loss_fn, A, b = quad_problem(1)
    sizes = [p.numel() for p in params]
    xs0 = [p.detach().numpy().copy() for p in params]
    An, bn = A.numpy(), b.numpy()

    def np_loss(xs):
        x = np.concatenate(xs)
        return 0.5 * x @ An @ x + bn @ x + 1.0

    def np_grad(xs):
        gx = An @ np.concatenate(xs) + bn
        return np.split(gx, np.cumsum(sizes)[:-1])
    ref = numpy_ecd(xs0, np_grad, np_loss, 6, lr=0.3, eta=4.0, F0=-3.0, projection=projection)
    opt = ECD(params, lr=0.3, eta=4.0, F0=-3.0, projection=projection)
    for k in range(6):
        opt.step(closure_for(opt, loss_fn))
        for p, r in zip(params, ref[k]):
            np.testing.assert_allclose(p.detach().numpy(), r, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------- exact properties
@pytest.mark.parametrize("nu", [0.0, 0.3])
def test_unit_speed_at_every_step_start(nu):
    params, loss_fn, _, _ = quad_problem(2)
    opt = ECD(params, lr=0.2, eta=9.0, F0=-5.0, nu=nu, seed=3)
    for _ in range(15):
        vel_before = [opt.state[p]["velocity"].clone() for p in params] if opt.initialized else None
        opt.step(closure_for(opt, loss_fn))
        # the drift part is lr_s·‖p‖ at the step start: ‖p‖ = 1 exactly
        assert opt.last["drift_length"] == pytest.approx(opt.last["lr_s"], rel=1e-12)
        if vel_before is not None:   # stored speed = kicked speed, restored to 1 by the next step
            assert opt.p2 == pytest.approx(opt.last["step_length"] ** 2 / opt.last["lr_s"] ** 2, rel=1e-12)


def test_step_equals_closed_form_global():
    params, loss_fn, A, b = quad_problem(3)
    lr, eta, F0 = 0.25, 16.0, -2.0
    opt = ECD(params, lr=lr, eta=eta, F0=F0, projection="global")
    for _ in range(3):
        opt.step(closure_for(opt, loss_fn))
    d = sum(p.numel() for p in params)
    for _ in range(5):
        x0 = torch.cat([p.detach().reshape(-1) for p in params]).clone()
        v = torch.cat([opt.state[p]["velocity"].reshape(-1) for p in params])
        phat = v / v.norm()
        g = A @ x0 + b
        F = float(loss_fn().detach())
        gperp = g - phat * (phat @ g)
        opt.step(closure_for(opt, loss_fn))
        dx = torch.cat([p.detach().reshape(-1) for p in params]) - x0
        lr_s = lr / math.sqrt(eta)
        expect = lr_s * phat - 0.5 * lr ** 2 * d / (d - 1) * gperp / (F - F0)
        torch.testing.assert_close(dx, expect, rtol=1e-10, atol=1e-13)
        norm = lr_s * math.sqrt(1 + (0.5 * lr * math.sqrt(eta) * d / (d - 1) / (F - F0)) ** 2 * float(gperp @ gperp))
        assert float(dx.norm()) == pytest.approx(norm, rel=1e-12)
        assert opt.last["step_length"] == pytest.approx(norm, rel=1e-12)
        assert opt.last["grad_part_length"] == pytest.approx(float((dx - lr_s * phat).norm()), rel=1e-9)
        cos = float(phat @ (phat + (dx - lr_s * phat) / lr_s)) / float((phat + (dx - lr_s * phat) / lr_s).norm())
        assert opt.last["turn_angle"] == pytest.approx(math.acos(min(1.0, cos)), abs=1e-9)


def test_loss_below_F0_leaves_everything_untouched():
    params, loss_fn, _, _ = quad_problem(4)
    opt = ECD(params, lr=0.2, eta=4.0, F0=-50.0, nu=0.2, seed=1)
    for _ in range(3):
        opt.step(closure_for(opt, loss_fn))
    before = copy.deepcopy(opt.state_dict())
    x = [p.detach().clone() for p in params]
    opt.F0 = float(loss_fn().detach()) + 1.0          # the next loss lies below F0
    opt.step(closure_for(opt, loss_fn))
    after = opt.state_dict()
    assert all(torch.equal(a, p.detach()) for a, p in zip(x, params))
    for k, st in before["state"].items():
        assert torch.equal(st["velocity"], after["state"][k]["velocity"])
    assert torch.equal(before["ecd"]["generator"], after["ecd"]["generator"])
    assert after["ecd"]["iteration"] == before["ecd"]["iteration"] and after["ecd"]["p2"] == before["ecd"]["p2"]
    assert after["ecd"]["skipped"] == before["ecd"]["skipped"] + 1


def test_skipped_first_step_does_not_double_count():
    params, loss_fn, _, _ = quad_problem(5)
    opt = ECD(params, lr=0.2, eta=4.0, F0=1e9)
    opt.step(closure_for(opt, loss_fn))
    assert not opt.initialized and opt.skipped == 1 and opt.dim == 0
    opt.F0 = -10.0
    opt.step(closure_for(opt, loss_fn))
    opt.step(closure_for(opt, loss_fn))
    assert opt.dim == sum(p.numel() for p in params) and opt.iteration == 2


@pytest.mark.parametrize("projection", ["per_tensor", "global"])
def test_save_load_continue_is_bit_identical(projection):
    params, loss_fn, _, _ = quad_problem(6)
    opt = ECD(params, lr=0.2, eta=4.0, F0=-5.0, nu=0.5, seed=11, projection=projection, weight_decay=0.01)
    for _ in range(4):
        opt.step(closure_for(opt, loss_fn))
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    saved_x = [p.detach().clone() for p in params]
    for _ in range(5):
        opt.step(closure_for(opt, loss_fn))
    want = [p.detach().clone() for p in params]

    params2, loss_fn2, _, _ = quad_problem(6)
    with torch.no_grad():
        for p, s in zip(params2, saved_x):
            p.copy_(s)
    opt2 = ECD(params2, lr=0.2, eta=4.0, F0=-5.0, nu=0.5, seed=999, projection=projection, weight_decay=0.01)
    buf.seek(0)
    opt2.load_state_dict(torch.load(buf, weights_only=True))
    for _ in range(5):
        opt2.step(closure_for(opt2, loss_fn2))
    assert all(torch.equal(a, b.detach()) for a, b in zip(want, params2))
    assert opt2.iteration == opt.iteration and opt2.p2 == opt.p2


def test_loss_decreases_on_convex_quadratic():
    params, loss_fn, A, b = quad_problem(7, sizes=(12, 8))
    start = float(loss_fn().detach())
    xstar = -torch.linalg.solve(A, b)
    fmin = float(0.5 * xstar @ A @ xstar + b @ xstar + 1.0)
    opt = ECD(params, lr=0.1, eta=10.0, F0=fmin - 1.0)       # F0 below every loss
    for _ in range(400):
        opt.step(closure_for(opt, loss_fn))
    end = float(loss_fn().detach())
    assert end < fmin + 0.2 * (start - fmin)


def test_eta_prior_matches_reference_numbers():
    # 124M at 500M tokens: N = 122,070 updates, ‖θ0‖ ≈ 313 → η ≈ 1520 (the prior of arXiv 2601.22257)
    assert eta_prior(122_070, 313.0) == pytest.approx(1521, rel=2e-3)


# ---------------------------------------------------------------------------- Noether charge (arXiv 2601.22257)
def sombrero(a, b):
    """A rotation-invariant loss of two planar vectors, built from the invariants |a|², |b|², a·b."""
    r2 = a @ a + b @ b
    return (r2 - 1.0) ** 2 + 0.5 * (a @ b - 0.3) ** 2 + 0.2 * (a @ a)


def charge(a, b, pa, pb):
    """J = a×p_a + b×p_b (the one component of antisym(Θ Πᵀ) for 2-D rotations)."""
    return float(a[0] * pa[1] - a[1] * pa[0] + b[0] * pb[1] - b[1] * pb[0])


def max_charge(projection, nu, steps=400):
    g = torch.Generator().manual_seed(0)
    a = torch.nn.Parameter(torch.randn(2, generator=g, dtype=torch.float64))
    b = torch.nn.Parameter(torch.randn(2, generator=g, dtype=torch.float64))
    opt = ECD([a, b], lr=0.05, eta=5.0, F0=-1.0, nu=nu, projection=projection, seed=1)
    worst = 0.0
    for _ in range(steps):
        opt.step(closure_for(opt, lambda: sombrero(a, b)))
        worst = max(worst, abs(charge(a.detach(), b.detach(), opt.state[a]["velocity"], opt.state[b]["velocity"])))
    return worst, float(sombrero(a.detach(), b.detach()))


def test_global_projection_conserves_zero_charge_and_others_do_not():
    j_global, f_end = max_charge("global", 0.0)
    assert j_global <= 1e-10
    assert f_end < 1.0                       # the dynamics did move down the potential
    j_tensor, _ = max_charge("per_tensor", 0.0)
    j_noise, _ = max_charge("global", 0.1)
    assert j_tensor > 1e-2 and j_noise > 1e-2


def test_invariance_identity_gradient_is_orthogonal_to_rotations():
    a = torch.tensor([0.3, -1.2], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([0.7, 0.4], dtype=torch.float64, requires_grad=True)
    sombrero(a, b).backward()
    assert abs(charge(a.detach(), b.detach(), a.grad, b.grad)) < 1e-14


# ---------------------------------------------------------------------------- step-size matching (arXiv 2601.22257)
def linear_problem(d=7):
    """A linear loss (w·c)·s: its gradient s·c never changes, so plain SGD steps are exactly lr·s·‖c‖."""
    c = torch.randn(d, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def make_model():
        m = torch.nn.Module()
        m.w = torch.nn.Parameter(torch.linspace(-1.0, 1.0, d, dtype=torch.float64))
        return m
    return make_model, c, (lambda model, s: (model.w * c).sum() * s)


def sgd(model, lr):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.0)


def test_median_step_norm_is_exact_for_sgd_on_a_constant_gradient():
    make_model, c, loss_fn = linear_problem()
    scales = [100.0, 100.0, 1, 2, 3, 4, 5, 6, 7, 8]       # the first 20 % (the two large steps) are burn-in
    lr, g = 0.01, float(c.norm())
    model = make_model()
    norms = step_norms(model, sgd(model, lr), scales, loss_fn, 10)
    np.testing.assert_allclose(norms, [lr * s * g for s in scales], rtol=1e-12)
    model = make_model()
    got = median_step_norm(model, sgd(model, lr), lambda k: scales[k], loss_fn, 10)
    assert got == pytest.approx(lr * 4.5 * g, rel=1e-6)                  # median of 1..8
    model = make_model()
    assert median_step_norm(model, sgd(model, lr), scales, loss_fn, 10, skip_fraction=0.0) == \
        pytest.approx(lr * 5.5 * g, rel=1e-6)                              # median of 1..8, 100, 100


def test_calibrate_lr_damping_one_hits_the_target_in_one_rescale():
    make_model, c, loss_fn = linear_problem()
    g, target = float(c.norm()), 0.37
    res = calibrate_lr(make_model, sgd, [1.0], loss_fn, target, lr0=0.9, damping=1.0)
    assert res["converged"] and len(res["rounds"]) == 2
    assert res["rounds"][0]["lr"] == 0.9 and res["rounds"][0]["ratio"] == pytest.approx(0.9 * g / target, rel=1e-12)
    assert res["lr"] == pytest.approx(target / g, rel=1e-12)
    assert res["ratio"] == pytest.approx(1.0, abs=1e-12) == res["rounds"][1]["ratio"]
    assert res["rounds"][1]["statistic"] == pytest.approx(target, rel=1e-12)


def test_calibrate_lr_reference_damping_follows_the_square_root_rule_and_stops_after_max_rounds():
    make_model, c, loss_fn = linear_problem()
    g, target = float(c.norm()), 0.37
    # statistic ∝ lr: with lr ← lr/√ratio the ratio after k rescalings is ratio0^(1/2^k)
    res = calibrate_lr(make_model, sgd, [1.0], loss_fn, target, lr0=4 * target / g)
    assert [r["ratio"] for r in res["rounds"]] == pytest.approx([4 ** 0.5 ** k for k in range(6)], rel=1e-10)
    assert res["converged"] and res["ratio"] == pytest.approx(4 ** (1 / 32), rel=1e-10)    # 1.044 ≤ 1.05
    res = calibrate_lr(make_model, sgd, [1.0], loss_fn, target, lr0=16 * target / g)
    assert not res["converged"] and len(res["rounds"]) == 6                 # 5 rescalings, all measured
    assert res["ratio"] == pytest.approx(16 ** (1 / 32), rel=1e-10) and res["lr"] == res["rounds"][-1]["lr"]
    res = calibrate_lr(make_model, sgd, [1.0], loss_fn, target, lr0=16 * target / g, max_rounds=0)
    assert len(res["rounds"]) == 1 and res["lr"] == 16 * target / g


def test_ecd_steps_skipped_below_F0_are_left_out_of_the_median():
    params, _, A, b = quad_problem(8)
    x0 = [p.detach().clone() for p in params]
    xstar = -torch.linalg.solve(A, b)
    F0 = float(0.5 * xstar @ A @ xstar + b @ xstar + 1.0) - 1.0         # below every loss of the quadratic

    def fresh():
        m = torch.nn.Module()
        m.u, m.v = (torch.nn.Parameter(x.clone()) for x in x0)
        return m

    def loss_fn(model, on):          # an "off" minibatch has a loss below F0 (and a zero gradient): ECD skips it
        x = torch.cat([model.u, model.v])
        F = 0.5 * x @ A @ x + b @ x + 1.0
        return F if on else 0.0 * F + (F0 - 1.0)

    def ecd(model):
        return ECD(model.parameters(), lr=0.2, eta=4.0, F0=F0)
    on = [1, 1, 1, 0, 1, 0, 1, 0, 1, 1]
    model = fresh()
    norms = step_norms(model, ecd(model), on, loss_fn, 10)
    assert [n == 0.0 for n in norms] == [not k for k in on]
    model = fresh()
    want = step_norms(model, ecd(model), [1], loss_fn, 7)      # the same 7 updates without the skipped calls
    np.testing.assert_allclose([n for n in norms if n], want, rtol=1e-12)
    model = fresh()
    got = median_step_norm(model, ecd(model), on, loss_fn, 10)
    assert got == pytest.approx(float(np.median(want[2:])), rel=1e-12)   # window = calls 2..9 = updates 2..6
    model = fresh()
    with pytest.raises(UserError, match="F0"):
        median_step_norm(model, ecd(model), [0], loss_fn, 5)


def mlp_problem():
    """A 161-parameter tanh MLP on a fixed regression set, 50 fixed minibatches of 32."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(256, 8, generator=g)
    y = torch.tanh(X @ torch.randn(8, 1, generator=g)) + 0.1 * torch.randn(256, 1, generator=g)
    idx = [torch.randperm(256, generator=g)[:32] for _ in range(50)]

    def make_model():                # initialised from the global RNG: calibrate_lr seeds it per round
        return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    return make_model, (lambda k: (X[idx[k]], y[idx[k]])), (lambda m, b: torch.nn.functional.mse_loss(m(b[0]), b[1]))


def test_calibrate_adamw_against_ecd_on_a_small_mlp():
    make_model, batches, loss_fn = mlp_problem()
    with torch.random.fork_rng(devices=[]):           # the same θ0 as calibrate_lr's rounds (seed 0)
        torch.manual_seed(0)
        model = make_model()
    target = median_step_norm(model, ECD(model.parameters(), lr=0.3, eta=100.0, F0=-1.0), batches, loss_fn, 50)
    assert 0.01 < target < 0.1

    def adamw(m, lr):
        return torch.optim.AdamW(m.parameters(), lr=lr)
    rng = torch.get_rng_state()
    res = calibrate_lr(make_model, adamw, batches, loss_fn, target, lr0=3e-3)   # reference damping ½, ±5 %
    assert torch.equal(rng, torch.get_rng_state())     # the caller's RNG is left alone
    assert res["converged"] and abs(res["ratio"] - 1) <= 0.05 and 2 <= len(res["rounds"]) <= 6
    assert all(r["still_steps"] == 0 for r in res["rounds"])
    assert res == calibrate_lr(make_model, adamw, batches, loss_fn, target, lr0=3e-3)       # deterministic
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = make_model()
    again = median_step_norm(model, adamw(model, res["lr"]), batches, loss_fn, 25)
    assert again == res["rounds"][-1]["statistic"] and again / target == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("kwargs,msg", [
    ({"target": 0.0}, "target"), ({"target": -1.0}, "target"), ({"target": float("nan")}, "target"),
    ({"lr0": 0.0}, "lr0"), ({"lr0": float("inf")}, "lr0"), ({"n_steps": 1}, "n_steps"),
    ({"tol": 0.0}, "tol"), ({"max_rounds": -1}, "max_rounds"), ({"damping": 0.0}, "damping"),
    ({"damping": 1.5}, "damping"), ({"skip_fraction": 1.0}, "skip_fraction"), ({"batches": []}, "empty"),
    ({"make_model": None}, "callable")])
def test_calibrate_lr_refuses_bad_arguments(kwargs, msg):
    make_model, _, loss_fn = linear_problem()
    args = dict(make_model=make_model, make_optimizer=sgd, batches=[1.0], loss_fn=loss_fn, target=0.1, lr0=0.01)
    args.update(kwargs)
    with pytest.raises(UserError, match=msg):
        calibrate_lr(**args)


def test_step_norm_helpers_refuse_bad_arguments_and_report_divergence():
    make_model, _, loss_fn = linear_problem()
    model = make_model()
    with pytest.raises(UserError, match="n_steps"):
        median_step_norm(model, sgd(model, 0.1), [1.0], loss_fn, 0)
    with pytest.raises(UserError, match="skip_fraction"):
        median_step_norm(model, sgd(model, 0.1), [1.0], loss_fn, 5, skip_fraction=-0.1)
    with pytest.raises(UserError, match="batches"):
        median_step_norm(model, sgd(model, 0.1), 3, loss_fn, 5)

    def blow_up(m, s):                     # w ← (1 − 2·lr)·w overflows to inf, then nan
        return (m.w.float() ** 2).sum()
    with pytest.raises(UserError, match="diverged"):
        calibrate_lr(make_model, sgd, [1.0], blow_up, target=0.1, lr0=1e30, n_steps=10)
