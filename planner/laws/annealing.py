"""The loss curve under a learning-rate schedule: Tissue et al. 2024, "Scaling Law with Learning Rate Annealing"
(arXiv 2408.11029).

Their law (abstract and eq. 1) gives the validation loss after step s of any LR schedule eta_1, eta_2, ...:
    L(s) = L0 + A * S1^(-alpha) - C * S2
    S1 = sum_{i<=s} eta_i                         forward area: the area under the LR curve
    S2 = sum_{i<=s} m_i,  m_i = lambda * m_{i-1} + (eta_{i-1} - eta_i)
                                                  annealing area, with "momentum" m and decay factor lambda
so a constant LR (S2 = 0) gives a power law in steps, and a cool-down adds the extra drop C * S2, which lags
the LR change by about 1/(1 - lambda) steps. Equation numbers past eq. 1 could not be checked from here (only
the abstract and secondary reimplementations were reachable); the definitions above are those of the abstract
("S1 is the area under the LR curve, S2 is the LR annealing area") and of the momentum form every public
reimplementation uses. The value of lambda the paper uses could not be checked either: `DEFAULT_DECAY` = 0.999
(a lag of ~1,000 steps) is an ASSUMPTION recalled from the paper, NOT verified, kept only as the library
functions' default. On the Gemstones runs it predicts held-out cool-down ends worst of the values tried (8.1%
mean error against 0.21% for 0.95; planner.laws.plan_curve.choose_decay), so `planner predict --curve-data`
fits lambda, or uses the Gemstones-selected value, instead (planner.laws.plan_curve.default_decay).

Units here: eta is the LR divided by the schedule's peak (1 on the stable phase), so S1 counts peak-LR steps and
the fitted A and C absorb the peak LR. Warm-up is counted in S1 with its LR; S2 starts after the warm-up
(m = 0 at the peak: a rising LR is not an annealing), an ASSUMPTION where the paper's treatment was not checked.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from planner.errors import PlannerInputError

DEFAULT_DECAY = 0.999  # lambda; ASSUMED, unverified (see the module docstring): library default only
COOLDOWN_SHAPES = ("linear", "1-sqrt", "cosine")


# --- schedules (LR / peak per step, steps 1..total) ---------------------------------------------------------
def cooldown_factor(progress: np.ndarray, shape: str) -> np.ndarray:
    """LR / peak during a cool-down at progress 0..1 through it, ending at 0. '1-sqrt': Hagele et al. 2024."""
    progress = np.clip(progress, 0.0, 1.0)
    if shape == "linear":
        return 1.0 - progress
    if shape == "1-sqrt":
        return 1.0 - np.sqrt(progress)
    if shape == "cosine":
        return 0.5 * (1.0 + np.cos(np.pi * progress))
    raise PlannerInputError(f"--cooldown-shape: expected one of {', '.join(COOLDOWN_SHAPES)}, got {shape!r}")


def wsd_schedule(total_steps: int, warmup_steps: int = 0, cooldown_steps: int = 0, shape: str = "1-sqrt",
                 cooldown_start: int | None = None) -> np.ndarray:
    """LR / peak for steps 1..total_steps: linear warm-up, constant, then a cool-down to 0 over `cooldown_steps`
    ending at `total_steps` (or starting after `cooldown_start` steps and holding 0 after it ends)."""
    if total_steps < 1 or warmup_steps < 0 or cooldown_steps < 0:
        raise PlannerInputError(f"schedule: expected total_steps >= 1 and non-negative warm-up and cool-down, got "
                                f"{total_steps}, {warmup_steps}, {cooldown_steps}")
    start = total_steps - cooldown_steps if cooldown_start is None else cooldown_start
    if warmup_steps > start:
        raise PlannerInputError(f"schedule: warm-up ({warmup_steps} steps) runs past the cool-down start ({start})")
    step = np.arange(1, total_steps + 1, dtype=float)
    lr = np.minimum(1.0, step / warmup_steps) if warmup_steps else np.ones_like(step)
    if cooldown_steps:
        cooling = step > start
        lr[cooling] = cooldown_factor((step[cooling] - start) / cooldown_steps, shape)
    return lr


def cosine_schedule(total_steps: int, warmup_steps: int = 0, final_fraction: float = 0.1) -> np.ndarray:
    """LR / peak: linear warm-up, then cosine to `final_fraction` of the peak at `total_steps` (Hoffmann et al.)."""
    step = np.arange(1, total_steps + 1, dtype=float)
    progress = np.clip((step - warmup_steps) / max(total_steps - warmup_steps, 1), 0.0, 1.0)
    lr = final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + np.cos(np.pi * progress))
    if warmup_steps:
        lr = np.where(step <= warmup_steps, step / warmup_steps, lr)
    return lr


# --- areas and the law ------------------------------------------------------------------------------------
def annealing_areas(lr, decay: float = DEFAULT_DECAY) -> tuple[np.ndarray, np.ndarray]:
    """(S1, S2) after each step of the schedule `lr` (LR / peak per step; the last axis is steps).

    S2's momentum starts at the peak: LR rises (warm-up) are not annealing, so the increments before the
    schedule first reaches its maximum are dropped (see the module docstring)."""
    lr = np.asarray(lr, dtype=float)
    if lr.ndim == 0 or lr.shape[-1] == 0 or not np.all(np.isfinite(lr)) or np.any(lr < 0):
        raise PlannerInputError("schedule: expected a non-empty array of non-negative, finite learning rates")
    if not 0.0 <= decay < 1.0:
        raise PlannerInputError(f"--decay: expected lambda in [0, 1), got {decay!r}")
    s1 = np.cumsum(lr, axis=-1)
    drop = np.zeros_like(lr)
    drop[..., 1:] = lr[..., :-1] - lr[..., 1:]
    peak_reached = np.maximum.accumulate(lr, axis=-1) >= lr.max(axis=-1, keepdims=True)
    first_peak = np.argmax(peak_reached, axis=-1)[..., None]
    drop = np.where(np.arange(lr.shape[-1]) > first_peak, drop, 0.0)
    from scipy.signal import lfilter  # here, not at module level: scipy.signal adds ~1 s to every CLI start

    momentum = lfilter([1.0], [1.0, -decay], drop, axis=-1)  # m_i = lambda m_{i-1} + drop_i
    return s1, np.cumsum(momentum, axis=-1)


def coarse_annealing_areas(lr, steps_per_entry: int, decay: float = DEFAULT_DECAY) -> tuple[np.ndarray, np.ndarray]:
    """(S1, S2) after each entry of a schedule sampled every `steps_per_entry` optimizer steps (1-D `lr`, LR / peak
    per entry), in steps: how a plan of millions of steps gets its curve without a per-step array.

    Summing the momentum recursion gives S2(s) = sum_j d_j (1 - lambda^(s-j+1)) / (1 - lambda) over the LR drops
    d_j up to step s, i.e. (cumsum(d) - lambda * E) / (1 - lambda) with E an exponential filter of the drops;
    with entries k steps apart each entry's drop is placed at its step and E decays by lambda^k per entry. Exact
    for k = 1 (annealing_areas); for k > 1 the error is of order k / (steps of the cool-down). Warm-up drops
    are excluded as in annealing_areas."""
    lr = np.asarray(lr, dtype=float)
    if steps_per_entry < 1 or int(steps_per_entry) != steps_per_entry:
        raise PlannerInputError(f"schedule: expected a whole number of steps per entry >= 1, got {steps_per_entry!r}")
    if lr.ndim != 1 or lr.size == 0 or not np.all(np.isfinite(lr)) or np.any(lr < 0):
        raise PlannerInputError("schedule: expected a non-empty 1-D array of non-negative, finite learning rates")
    if not 0.0 <= decay < 1.0:
        raise PlannerInputError(f"--decay: expected lambda in [0, 1), got {decay!r}")
    k = int(steps_per_entry)
    s1 = k * np.cumsum(lr)
    drop = np.zeros_like(lr)
    drop[1:] = lr[:-1] - lr[1:]
    first_peak = int(np.argmax(lr >= lr.max()))
    drop[: first_peak + 1] = 0.0
    from scipy.signal import lfilter  # here, not at module level (see annealing_areas)

    recent = lfilter([1.0], [1.0, -decay**k], drop)  # E_i = lambda^k E_(i-1) + d_i
    return s1, (np.cumsum(drop) - decay * recent) / (1.0 - decay)


@dataclass(frozen=True)
class AnnealingLaw:
    """L(s) = L0 + A S1^-alpha - C S2 (Tissue et al. 2024) for one model; S1, S2 in peak-LR steps."""

    L0: float
    A: float
    alpha: float
    C: float
    decay: float = DEFAULT_DECAY
    source: str = "Tissue et al. 2024, 'Scaling Law with Learning Rate Annealing', eq. 1"

    coefficient_names = ("L0", "A", "alpha", "C")

    def coefficients(self) -> dict[str, float]:
        return {"L0": self.L0, "A": self.A, "alpha": self.alpha, "C": self.C, "decay": self.decay}

    def from_areas(self, s1, s2) -> np.ndarray:
        return self.L0 + self.A * np.asarray(s1, dtype=float) ** -self.alpha - self.C * np.asarray(s2, dtype=float)

    def curve(self, lr) -> np.ndarray:
        """Loss after every step of the schedule `lr` (LR / peak per step)."""
        return self.from_areas(*annealing_areas(lr, self.decay))


# lambda values tried when it is fitted (decay=None): 1 - 10^-k for k from 1 to 4 (time constants 10 to 10^4 steps).
_DECAY_GRID = 1.0 - np.logspace(-1, -4, 31)


def fit_annealing_law(schedules: list[np.ndarray], steps: list[np.ndarray], losses: list[np.ndarray],
                      decay: float | None = DEFAULT_DECAY, huber_delta: float = 1e-3) -> tuple[AnnealingLaw, dict]:
    """`decay=None` fits lambda too (on a grid, 1 - 10^-1 to 1 - 10^-4): only meaningful with annealed points
    of several cool-down lengths, which lambda is what tells apart; see `_fit_fixed_decay` for the rest."""
    if decay is not None:
        return _fit_fixed_decay(schedules, steps, losses, decay, huber_delta)
    fits = [_fit_fixed_decay(schedules, steps, losses, float(d), huber_delta) for d in _DECAY_GRID]
    return min(fits, key=lambda fit: fit[1]["objective"])


def _fit_fixed_decay(schedules, steps, losses, decay: float, huber_delta: float) -> tuple[AnnealingLaw, dict]:
    """Fit L0, A, alpha, C to logged losses of one model: curve k ran schedule `schedules[k]` (LR / peak per step)
    and logged `losses[k]` after steps `steps[k]` (1-based). Huber loss on log L (delta as the final-loss fits),
    trust-region least squares from a small grid of starts; C >= 0 (annealing lowers the loss). With only
    constant-LR curves S2 is 0 everywhere and C is not identifiable: that is an error, not C = 0."""
    s1_all, s2_all, loss_all = [], [], []
    for lr, at, loss in zip(schedules, steps, losses):
        at = np.asarray(at, dtype=int)
        if at.size == 0 or at.min() < 1 or at.max() > len(lr):
            raise PlannerInputError(f"curve data: logged steps must lie within the schedule's 1..{len(lr)}")
        s1, s2 = annealing_areas(lr, decay)
        s1_all.append(s1[at - 1])
        s2_all.append(s2[at - 1])
        loss_all.append(np.asarray(loss, dtype=float))
    s1, s2, loss = (np.concatenate(v) for v in (s1_all, s2_all, loss_all))
    if not np.all(np.isfinite(loss) & (loss > 0)):
        raise PlannerInputError("curve data: losses must be positive and finite")
    if loss.size < 5:
        raise PlannerInputError(f"curve data: {loss.size} points for 4 parameters; need at least 5")
    if not np.any(s2 > 0):
        raise PlannerInputError("curve data: no point is after an LR decrease (S2 = 0 everywhere), so the annealing "
                                "coefficient C cannot be fitted; add a cooled-down point or a decaying schedule")
    log_l = np.log(loss)

    def residual(x):
        l0, log_a, alpha, c = x
        pred = l0 + np.exp(log_a - alpha * np.log(s1)) - c * s2
        return np.log(np.maximum(pred, 1e-12)) - log_l

    # L0 is not a floor of the data: after a cool-down the loss sits C·S2 below the constant-LR curve. C is
    # fitted in natural units from 0 (no annealing gain) up to a gain of the whole largest loss.
    c_scale = (loss.max() - loss.min() + 1e-3 * loss.max()) / s2.max()
    low, high = [0.0, -20.0, 1e-3, 0.0], [loss.max(), 30.0, 3.0, loss.max() / s2.max()]
    best = None
    from scipy.optimize import least_squares  # here, not at module level: ~0.5 s of every CLI start

    for l0_frac, alpha, c_frac in itertools.product((0.5, 0.8), (0.2, 0.5, 1.0), (0.1, 0.5)):
        l0 = l0_frac * loss.min()
        gap = max(loss.max() - l0, 1e-3)
        x0 = np.array([l0, np.log(gap) + alpha * np.log(s1.min()), alpha, c_frac * c_scale])
        x0 = np.clip(x0, np.array(low) + 1e-9, np.array(high) - 1e-9)
        result = least_squares(residual, x0, bounds=(low, high), loss="huber", f_scale=huber_delta, x_scale="jac")
        if best is None or result.cost < best.cost:
            best = result
    l0, log_a, alpha, c = best.x
    law = AnnealingLaw(L0=float(l0), A=float(np.exp(log_a)), alpha=float(alpha), C=float(c), decay=decay)
    return law, {"residuals": residual(best.x), "converged": bool(best.success), "points": int(loss.size),
                 "objective": float(best.cost)}


def plan_schedule(schedule: dict, total_steps: int) -> np.ndarray:
    """LR / peak per step for a plan's schedule as planner.laws.hyperparameters.plan_hyperparameters gives it
    (kind 'wsd', warmup_fraction, cooldown_fraction, cooldown_shape, min_lr / peak_lr)."""
    if schedule.get("kind") != "wsd":
        raise PlannerInputError(f"schedule kind {schedule.get('kind')!r}: only 'wsd' plans have a curve here")
    lr = wsd_schedule(total_steps, int(round(schedule["warmup_fraction"] * total_steps)),
                      int(round(schedule["cooldown_fraction"] * total_steps)), schedule["cooldown_shape"])
    floor = schedule.get("min_lr", 0.0) / schedule["peak_lr"] if schedule.get("peak_lr") else 0.0
    return np.maximum(lr, floor) if floor else lr


def plan_loss_curve(law: AnnealingLaw, schedule: dict, total_steps: int, tokens_per_step: float,
                    points: int = 11) -> list[dict]:
    """The plan's predicted loss curve at `points` evenly spaced steps (the last one the end of training):
    [{step, tokens, lr_fraction, loss}]. `law` must be fitted to the plan's model (planner curve / fit on logged
    curves); this function only applies it to the plan's schedule."""
    if total_steps < 1 or tokens_per_step <= 0 or points < 2:
        raise PlannerInputError("plan curve: expected total_steps >= 1, tokens_per_step > 0 and points >= 2")
    lr = plan_schedule(schedule, total_steps)
    loss = law.curve(lr)
    at = np.unique(np.linspace(total_steps / points, total_steps, points).round().astype(int).clip(1, total_steps))
    return [{"step": int(s), "tokens": float(s * tokens_per_step), "lr_fraction": float(lr[s - 1]),
             "loss": float(loss[s - 1])} for s in at]
