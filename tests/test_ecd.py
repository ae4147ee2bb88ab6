"""ECD_q1 (training/ecd.py) against an independent numpy implementation of the equations and its exact
properties: unit speed, the closed-form step, skipped steps, bit-identical resume, descent on a convex
quadratic, and the Noether charge on the rotation-invariant sombrero toy (reference modadd_ecd §B.4)."""
import copy
import io
import math

import numpy as np
import pytest
import torch

from training.ecd import ECD, eta_prior
from training.errors import UserError


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
    """The update of reference §B.2 on a list of numpy arrays (ν = 0), written independently."""
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
    # 124M at 500M tokens: N = 122,070 updates, ‖θ0‖ ≈ 313 → η ≈ 1520 (reference §B.2)
    assert eta_prior(122_070, 313.0) == pytest.approx(1521, rel=2e-3)


# ---------------------------------------------------------------------------- Noether charge (§B.4)
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
