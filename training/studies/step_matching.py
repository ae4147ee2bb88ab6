"""Step-size matching of baseline optimizers to ECD (the symmetry-breaking / ECD study's protocol).

:func:`step_norms` and :func:`median_step_norm` measure the per-update ‖Δθ‖ of a short run (from a forked,
seeded generator, so the caller's RNG is untouched); :func:`calibrate_lr` rescales a baseline optimizer's
learning rate until its median step matches a target (ECD's) within a tolerance, with damped
multiplicative updates, and reports every round.
"""
from __future__ import annotations

import contextlib
import math
import statistics
from typing import Callable

import torch

from training.core.errors import UserError


def step_norms(model: torch.nn.Module, optimizer, batches, loss_fn: Callable, n_steps: int) -> list[float]:
    """Make ``n_steps`` optimizer steps on ``model`` from its current state and return the global L2 norm
    ‖Δθ‖ of every step's parameter change (over all of ``model.parameters()``, summed in float64).

    ``batches`` is a callable ``step -> batch`` (step = 0, 1, ...) or a sequence (indexed ``step % len``);
    ``loss_fn(model, batch)`` returns the scalar minibatch loss. Every step goes through a closure that zeroes
    the gradients, back-propagates the loss and returns it, so ECD (which needs the loss) and any torch
    optimizer are driven the same way. A step that left every parameter bit for bit unchanged (ECD skips a
    minibatch whose loss is ≤ F0) reports 0.0.
    """
    if not isinstance(n_steps, int) or n_steps < 1:
        raise UserError(f"step_norms: n_steps must be a positive integer (got {n_steps!r})")
    if not callable(loss_fn):
        raise UserError("step_norms: loss_fn must be a callable loss_fn(model, batch) -> scalar loss")
    batch_at = _batch_source(batches)
    params = [p for p in model.parameters()]
    if not params:
        raise UserError("step_norms: the model has no parameters")
    norms = []
    for step in range(n_steps):
        batch = batch_at(step)

        def closure(batch=batch):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model, batch)
            loss.backward()
            return loss
        before = [p.detach().clone() for p in params]
        optimizer.step(closure)
        with torch.no_grad():
            sq = torch.stack([(p.detach() - b).double().square().sum() for p, b in zip(params, before)]).sum()
        norms.append(math.sqrt(float(sq)))
    return norms


def median_step_norm(model: torch.nn.Module, optimizer, batches, loss_fn: Callable, n_steps: int,
                     skip_fraction: float = 0.2) -> float:
    """The step-size statistic of the baseline step-size matching of arXiv 2601.22257: make ``n_steps`` steps (see
    :func:`step_norms` for ``batches`` and ``loss_fn``) and return the median ‖Δθ‖ over the last
    (1 − ``skip_fraction``) of them (the first ⌊skip_fraction·n_steps⌋ steps are a burn-in).

    Steps that did not move the parameters (ECD's skipped minibatches, loss ≤ F0) are left out of the
    median: they are not updates, and counting their zeros would understate the step size. If no step in
    the window moved, this is an error (F0 is too high for the data, or the gradient vanishes); a window
    with a non-finite step (a diverged run) gives NaN.
    """
    if not 0.0 <= skip_fraction < 1.0:
        raise UserError(f"median_step_norm: skip_fraction must lie in [0, 1) (got {skip_fraction})")
    norms = step_norms(model, optimizer, batches, loss_fn, n_steps)
    return _window_median(norms, skip_fraction, "median_step_norm")


def calibrate_lr(make_model: Callable[[], torch.nn.Module], make_optimizer: Callable, batches, loss_fn: Callable,
                 target: float, lr0: float, *, n_steps: int = 25, tol: float = 0.05, max_rounds: int = 5,
                 damping: float = 0.5, skip_fraction: float = 0.2, seed: int = 0) -> dict:
    """Match a baseline optimizer's per-update ‖Δθ‖ to ``target`` (the "step-size matching for
    baselines" of arXiv 2601.22257); ``target`` is normally ECD's :func:`median_step_norm` over 50 updates.

    Every round builds a fresh model with ``make_model()`` and an optimizer with ``make_optimizer(model, lr)``,
    measures :func:`median_step_norm` over ``n_steps`` steps, and forms ratio = statistic/target. The search
    stops when |ratio − 1| ≤ ``tol``; otherwise lr ← lr·ratio^(−damping) (damping ½ is that
    protocol's 1/√ratio; 1 is exact when ‖Δθ‖ ∝ lr, as for SGD) and the next round measures again. At most
    ``max_rounds`` rescalings are made (so at most max_rounds + 1 measurements; the protocol uses 5).

    ``make_model`` must return the same initial model every time (e.g. a deepcopy of one model, or a model
    built under a fixed seed): each round then starts from the same θ0 and sees the same ``batches``, so the
    rounds differ only by lr. Each round runs inside a forked RNG seeded with ``seed`` (the CPU generator,
    and the CUDA generators when CUDA is in use), so the result is deterministic and the caller's global RNG
    is left untouched.

    Returns ``{"lr", "ratio", "converged", "rounds"}``: the last measured lr and its ratio, whether that ratio
    is within ``tol``, and per round ``{"lr", "statistic", "ratio", "still_steps"}`` (still_steps: steps in the
    measured window that did not move the parameters).
    """
    _check_positive("target", target)
    _check_positive("lr0", lr0)
    if not isinstance(n_steps, int) or n_steps < 2:
        raise UserError(f"calibrate_lr: n_steps must be an integer >= 2 (got {n_steps!r})")
    if not 0.0 < tol < 1.0:
        raise UserError(f"calibrate_lr: tol must lie in (0, 1) (got {tol})")
    if not isinstance(max_rounds, int) or max_rounds < 0:
        raise UserError(f"calibrate_lr: max_rounds must be an integer >= 0 (got {max_rounds!r})")
    if not 0.0 < damping <= 1.0:
        raise UserError(f"calibrate_lr: damping must lie in (0, 1] (got {damping}); 0.5 is the protocol's 1/sqrt")
    if not 0.0 <= skip_fraction < 1.0:
        raise UserError(f"calibrate_lr: skip_fraction must lie in [0, 1) (got {skip_fraction})")
    if not (callable(make_model) and callable(make_optimizer)):
        raise UserError("calibrate_lr: make_model() and make_optimizer(model, lr) must be callables")
    lr, rounds = float(lr0), []
    while True:
        with _forked_rng(seed):
            model = make_model()
            optimizer = make_optimizer(model, lr)
            norms = step_norms(model, optimizer, batches, loss_fn, n_steps)
        stat = _window_median(norms, skip_fraction, "calibrate_lr")
        if not math.isfinite(stat):
            raise UserError(f"calibrate_lr: the step norm at lr={lr:g} is not finite (the run diverged); "
                            f"start from a smaller lr0")
        ratio = stat / target
        start = int(math.floor(skip_fraction * n_steps))
        rounds.append({"lr": lr, "statistic": stat, "ratio": ratio,
                       "still_steps": sum(1 for n in norms[start:] if n == 0.0)})
        converged = abs(ratio - 1.0) <= tol
        if converged or len(rounds) > max_rounds:
            return {"lr": lr, "ratio": ratio, "converged": converged, "rounds": rounds}
        lr = lr * ratio ** (-damping)


def _batch_source(batches) -> Callable[[int], object]:
    if callable(batches):
        return batches
    try:
        n = len(batches)
    except TypeError:
        raise UserError("batches must be a callable step -> batch or a sequence of batches") from None
    if n == 0:
        raise UserError("batches is an empty sequence")
    return lambda step: batches[step % n]


def _window_median(norms: list[float], skip_fraction: float, who: str) -> float:
    start = int(math.floor(skip_fraction * len(norms)))
    if not all(math.isfinite(n) for n in norms[start:]):
        return math.nan
    moved = [n for n in norms[start:] if n != 0.0]
    if not moved:
        raise UserError(f"{who}: no step in the measured window moved the parameters (for ECD: every minibatch "
                        f"loss was <= F0, lower F0)")
    return statistics.median(moved)


def _check_positive(name: str, value) -> None:
    try:
        ok = math.isfinite(value) and value > 0
    except TypeError:
        ok = False
    if not ok:
        raise UserError(f"calibrate_lr: {name} must be a positive finite number (got {value!r})")


@contextlib.contextmanager
def _forked_rng(seed: int):
    """Run the block with the CPU generator (and the CUDA ones, when CUDA is in use) seeded with ``seed``,
    restoring the caller's generator states afterwards."""
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if cuda else []):
        torch.default_generator.manual_seed(seed)
        if cuda:
            torch.cuda.manual_seed_all(seed)
        yield
