"""Energy-conserving descent, the q = 1 variant (ECD_q1), written from its equations: De Luca & Silverstein,
arXiv 2201.11137, as used in arXiv 2601.22257 (evasilverstein/symmetry-breaking-files,
``symmetry_breaking_paper_code/optimizers/ECD_q1_scaled.py``).

The parameters θ move at constant speed along a unit velocity p; the loss only turns p. One update, with
F̃ = loss + ½·Σ wd‖θ‖², g̃ = ∇loss + wd·θ, lr = Δt̂, lr_s = Δt̂/√η, d = number of parameter elements and
κ = ½·Δt̂·√η·d/(d − 1):

1. (energy conservation) rescale p to unit global norm;
2. (kick) p ← p − κ/(F̃ − F0) · (g̃ − p⟨p, g̃⟩), the projection taken per tensor (``projection="per_tensor"``,
   what ``ECD_q1_scaled.py`` does) or over the whole parameter vector (``projection="global"``);
3. (drift) θ ← θ + lr_s·p with the kicked, not yet renormalised p;
4. (bounce, ν > 0) p ← p/‖p‖ + (ν/√d)·z with z ~ N(0, I) from the optimizer's own seeded generator, then
   rescaled to the kicked norm ‖p‖ again.

A minibatch with F̃ ≤ F0 is skipped completely (no motion, no change of p) and counted in ``skipped``.
In global mode Δθ = lr_s·p̂ − ½Δt̂²·d/(d−1)·g̃⊥/(F̃ − F0) exactly (g̃⊥ the part of g̃ orthogonal to p̂),
so an update is a drift of length Δt̂/√η plus a gradient step on log(F̃ − F0) across the velocity;
:attr:`ECD.last` reports both lengths and the turning angle of p for every step.

Helper: :func:`eta_prior` (the η suggestion of arXiv 2601.22257). Matching a baseline optimizer's step size to ECD's
is a protocol of the symmetry study: :mod:`training.studies.step_matching`.

Differences from ``ECD_q1_scaled.py``, all deliberate: the first-step initialisation happens once
(a skipped first step does not count the parameters twice), every scalar and the noise generator are in
``state_dict`` (a resumed run continues bit for bit), the generator is seeded explicitly, a parameter
without a gradient is treated as having a zero loss gradient, the learning rate is read from the
parameter group at every step (so a schedule applies; ``ECD_q1_scaled.py`` rescales it once), and with ν = 0 no
noise is drawn and the bounce is skipped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from training.core.errors import UserError

PROJECTIONS = ("per_tensor", "global")
EPS_P2 = 1e-10          # below this squared speed the energy rescaling is left out (eps1 of ECD_q1_scaled.py)
EPS_GAP = 1e-40         # F̃ − F0 must exceed this for a step to happen (eps2 of ECD_q1_scaled.py)


@dataclass
class ECDSettings:
    """ECD's settings, fields of :class:`training.core.config.Config` (checked with the optimizer's, in
    :func:`training.core.optim.check_optimizer`). For ECD, ``lr`` is its Δt̂ and ``wd`` its coupled L2 decay."""
    ecd_eta: float = 100.0           # concentration η (reference runs: 100)
    ecd_F0: float = 2.0              # loss offset; steps with loss <= F0 are skipped (reference runs: 2)
    ecd_nu: float = 0.0              # bounce amplitude ν (0 in every reference run)
    ecd_projection: str = "per_tensor"   # per_tensor (the reference code) | global (conserves the Noether charge)
    ecd_seed: Optional[int] = None   # bounce-noise seed; None = seed


class ECD(torch.optim.Optimizer):
    """ECD_q1 (see the module docstring). ``step`` needs a closure that returns the minibatch loss after
    back-propagating it (the loss and the gradient must refer to the same θ).

    Args:
        params: parameters or parameter groups (a group may set its own ``weight_decay``; ``lr`` is shared).
        lr: Δt̂, the rescaled step; the drift per update is lr/√eta.
        eta: the concentration parameter η.
        F0: the loss offset; it must lie below every loss the run will see (steps with F̃ ≤ F0 are skipped).
        nu: bounce amplitude ν (0 = no noise, the setting of every reference run).
        weight_decay: coupled L2 decay wd (enters F̃ and g̃).
        projection: ``"per_tensor"`` (reference) or ``"global"`` (conserves the Noether charge at ν = 0).
        seed: seed of the bounce noise generator.
        consEn: rescale p to unit norm at every step start (energy conservation; reference default True).
    """

    def __init__(self, params, lr: float = 1.0, eta: float = 100.0, F0: float = -1.0, nu: float = 0.0,
                 weight_decay: float = 0.0, projection: str = "per_tensor", seed: int = 0, consEn: bool = True):
        if not lr > 0:
            raise UserError(f"ECD: lr (Δt̂) must be positive (got {lr})")
        if not eta > 0:
            raise UserError(f"ECD: eta must be positive (got {eta})")
        if nu < 0:
            raise UserError(f"ECD: nu must be >= 0 (got {nu})")
        if weight_decay < 0:
            raise UserError(f"ECD: weight_decay must be >= 0 (got {weight_decay})")
        if projection not in PROJECTIONS:
            raise UserError(f"ECD: projection must be one of {', '.join(PROJECTIONS)} (got {projection!r})")
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay))
        self.eta, self.F0, self.nu = float(eta), float(F0), float(nu)
        self.projection, self.consEn, self.seed = projection, bool(consEn), int(seed)
        self.initialized = False
        self.dim = 0
        self.p2 = 1.0
        self.iteration = 0          # updates made (skipped steps not counted)
        self.skipped = 0            # steps with F̃ ≤ F0
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(self.seed)
        self.last: dict[str, float] = {}
        self.acc: dict[str, float] = {}         # sums of the per-step diagnostics since the last diagnostics()

    # ------------------------------------------------------------------ state
    _SCALARS = ("initialized", "dim", "p2", "iteration", "skipped", "eta", "F0", "nu", "projection", "consEn", "seed",
                "acc")

    def state_dict(self) -> dict:
        sd = super().state_dict()
        sd["ecd"] = {**{k: getattr(self, k) for k in self._SCALARS}, "generator": self.generator.get_state()}
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        ecd = state_dict.pop("ecd", None)
        if ecd is None:
            raise UserError("ECD: the optimizer state has no ECD section (it was not written by this ECD optimizer)")
        super().load_state_dict(state_dict)
        for k in self._SCALARS:
            setattr(self, k, dict(ecd[k]) if k == "acc" else ecd[k])
        self.generator.set_state(ecd["generator"])

    # ------------------------------------------------------------------ helpers
    def _params(self):
        for group in self.param_groups:
            for p in group["params"]:
                yield group, p

    @staticmethod
    def _grad(group, p) -> torch.Tensor:
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        wd = group["weight_decay"]
        return g + wd * p if wd else g

    def _velocity(self, p) -> torch.Tensor:
        return self.state[p]["velocity"]

    def _noise(self, like: torch.Tensor) -> torch.Tensor:
        z = torch.randn(like.shape, generator=self.generator, dtype=torch.float32, device="cpu")
        return z.to(device=like.device, dtype=like.dtype)

    # ------------------------------------------------------------------ the update
    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], torch.Tensor]] = None):
        if closure is None:
            raise UserError("ECD needs a closure: call optimizer.step(closure) with a closure that back-propagates "
                            "and returns the minibatch loss (the loss value sets ECD's turning rate)")
        with torch.enable_grad():
            loss = closure()
        params = list(self._params())
        f = float(loss)
        decayed = [(group["weight_decay"], p) for group, p in params if group["weight_decay"]]
        decay = sum(0.5 * wd * sq for (wd, _), sq in zip(decayed, _sums([p.detach() * p.detach() for _, p in decayed])))
        gap = f + decay - self.F0
        if not gap > EPS_GAP:          # (skipped steps leave the diagnostics sums alone)
            self.skipped += 1
            self.last = {"skipped": 1.0, "loss": f, "gap": gap}
            return loss
        grads = [self._grad(group, p) for group, p in params]
        if not self.initialized or any("velocity" not in self.state[p] for _, p in params):
            self._initialise(params, grads)      # first step, or the per-parameter state was cleared
        vel = [self._velocity(p) for _, p in params]

        # 1. energy conservation: unit speed at the start of the step
        if self.consEn and self.p2 > EPS_P2:
            c = math.sqrt(1.0 / self.p2)
            for v in vel:
                v.mul_(c)
        old = [v.clone() for v in vel]
        # 2. kick: turn the velocity against the gradient's component across it
        lr = params[0][0]["lr"]
        if any(group["lr"] != lr for group in self.param_groups):
            raise UserError("ECD: every parameter group must have the same lr (Δt̂ is one global step)")
        kappa = 0.5 * lr * math.sqrt(self.eta) * self.dim / max(self.dim - 1, 1)
        rate = kappa / gap
        per_tensor = _sums([v * g for v, g in zip(vel, grads)])     # one device sync for all tensors
        dots = [sum(per_tensor)] * len(vel) if self.projection == "global" else per_tensor
        for v, g, dot in zip(vel, grads, dots):
            v.add_(g - v * dot, alpha=-rate)
        pnorm = math.sqrt(sum(_sums([v * v for v in vel])))
        # 3. drift with the kicked velocity
        diag = self._diagnostics(params, old, vel, lr, pnorm)
        for (_, p), v in zip(params, vel):
            p.add_(v, alpha=lr / math.sqrt(self.eta))
        # 4. bounce
        if self.nu > 0:
            nu_s = self.nu / math.sqrt(self.dim)
            for v in vel:
                v.div_(pnorm).add_(self._noise(v), alpha=nu_s)
            new_norm = math.sqrt(sum(_sums([v * v for v in vel])))
            for v in vel:
                v.mul_(pnorm / new_norm)
        self.p2 = pnorm * pnorm
        self.iteration += 1
        self.last = {"skipped": 0.0, "loss": f, "gap": gap, **diag,
                     "turn_angle_with_bounce": _angle(old, vel)}
        for k in ("drift_length", "grad_part_length", "step_length", "turn_angle"):
            self.acc[k] = self.acc.get(k, 0.0) + diag[k]
        self.acc["n"] = self.acc.get("n", 0) + 1
        return loss

    def diagnostics(self) -> dict[str, float]:
        """Means of the per-step diagnostics since the previous call (then reset), and the counters; the
        training loop adds them to every metrics record."""
        n = self.acc.get("n", 0)
        out = {f"ecd_{k}": self.acc[k] / n for k in ("drift_length", "grad_part_length", "step_length", "turn_angle")
               if n}
        out.update(ecd_steps=n, ecd_skipped_total=self.skipped, ecd_updates_total=self.iteration)
        self.acc = {}
        return out

    def _initialise(self, params, grads) -> None:
        self.dim = sum(p.numel() for _, p in params)
        norm = math.sqrt(sum(_sums([g * g for g in grads])))
        for (_, p), g in zip(params, grads):
            self.state[p]["velocity"] = -g / norm if norm > 0 else self._noise(p)
        if not norm > 0:                       # zero gradient: a random unit direction
            vel = [self.state[p]["velocity"] for _, p in params]
            n = math.sqrt(sum(_sums([v * v for v in vel])))
            for v in vel:
                v.div_(n)
        self.p2 = 1.0
        self.initialized = True

    def _diagnostics(self, params, old, kicked, lr, pnorm) -> dict:
        """Lengths of the update's parts: the drift lr_s·p_old, the gradient part lr_s·(p_kicked − p_old),
        the whole step lr_s·‖p_kicked‖, and the angle between the old and the kicked velocity."""
        lr_s = lr / math.sqrt(self.eta)
        old_norm = math.sqrt(sum(_sums([v * v for v in old])))
        grad_part = math.sqrt(sum(_sums([(k - o) * (k - o) for k, o in zip(kicked, old)])))
        return {"drift_length": lr_s * old_norm, "grad_part_length": lr_s * grad_part,
                "step_length": lr_s * pnorm, "turn_angle": _angle(old, kicked), "lr_s": lr_s}


def _sums(tensors: list[torch.Tensor]) -> list[float]:
    """The element sums of ``tensors`` as Python floats, read back from the device once."""
    if not tensors:
        return []
    return torch.stack([t.sum() for t in tensors]).tolist()


def _angle(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    dot = sum(_sums([x * y for x, y in zip(a, b)]))
    na = math.sqrt(sum(_sums([x * x for x in a])))
    nb = math.sqrt(sum(_sums([y * y for y in b])))
    if na == 0 or nb == 0:
        return 0.0
    return math.acos(max(-1.0, min(1.0, dot / (na * nb))))


def eta_prior(n_steps: int, theta0_norm: float, dt_prior: float = 0.1, F2: float = 1.0) -> float:
    """The η suggestion of arXiv 2601.22257: η = (N·Δt̂_prior/‖θ0‖)²/F2, so that the total drift
    length N·Δt̂_prior/√η equals ‖θ0‖·√F2."""
    if n_steps <= 0 or theta0_norm <= 0 or F2 <= 0:
        raise UserError("eta_prior needs n_steps > 0, theta0_norm > 0 and F2 > 0")
    return (n_steps * dt_prior / theta0_norm) ** 2 / F2
