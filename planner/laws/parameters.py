"""Fixed, tied and bounded parameters for law fits (lmfit-style), as one linear map.

The optimiser sees only free coordinates x; the form sees the full vector theta = T·x + c, where
each column of T is one group of tied parameters and c holds fixed values. The gradient maps back
as T^T·g. Bounds of a tied group are the intersection of its members' bounds. Names and values
are the law's own coefficients in natural units (E = 1.69, not log E).
"""

from __future__ import annotations

import numpy as np

from planner.errors import PlannerInputError


class ParameterMap:
    def __init__(self, form, fixed=None, tied=(), bounds=None):
        names = form.param_names
        index = {name: i for i, name in enumerate(names)}
        fixed = dict(fixed or {})
        given_bounds = dict(bounds or {})
        bounds = {**{n: (lo, hi) for n, lo, hi in form.default_bounds}, **dict(bounds or {})}
        for name in [*fixed, *bounds, *(n for pair in (*form.default_ties, *tied) for n in pair)]:
            if name not in index:
                raise PlannerInputError(f"parameter {name!r} is not in the {form.name} form; "
                                        f"its parameters are {', '.join(names)}")

        for pair in tied:
            if len({name in form.log_params for name in pair}) > 1:
                # A tie shares one fitted coordinate; across a log and a linear parameter that would fit
                # log(E) = alpha, not E = alpha.
                log_name, linear_name = sorted(pair, key=lambda name: name not in form.log_params)
                raise PlannerInputError(f"cannot tie {pair[0]} and {pair[1]}: {log_name} is fitted as a logarithm, "
                                        f"{linear_name} as itself; tie parameters of one kind")
        group = list(range(len(names)))  # union-find over tied names: group[i] = representative
        root = lambda i: i if group[i] == i else root(group[i])
        for first, second in (*form.default_ties, *tied):
            group[root(index[second])] = root(index[first])
        members: dict[int, list[int]] = {}
        for i in range(len(names)):
            members.setdefault(root(i), []).append(i)

        self.offset = np.zeros(len(names))
        columns, free_bounds = [], []
        for rep, group_members in members.items():
            group_names = [names[i] for i in group_members]
            values = {fixed[n] for n in group_names if n in fixed}
            if len(values) > 1:
                raise PlannerInputError(f"tied parameters {', '.join(group_names)} are fixed to different values")
            if values:
                value = values.pop()
                _check_fixed_within_bounds(group_names, value, given_bounds)
                self.offset[group_members] = form.to_theta(group_names[0], value)
                continue
            column = np.zeros(len(names))
            column[group_members] = 1.0
            columns.append(column)
            free_bounds.append(_group_bounds(form, group_names, bounds))
        self.matrix = np.array(columns).T.reshape(len(names), len(columns))
        self.free_bounds = free_bounds
        self.free_names = [", ".join(names[i] for i in np.flatnonzero(c)) for c in columns]
        self._rep_index = [int(np.flatnonzero(c)[0]) for c in columns]

    @property
    def n_free(self) -> int:
        return self.matrix.shape[1]

    def to_full(self, free: np.ndarray) -> np.ndarray:
        return free @ self.matrix.T + self.offset

    def to_free(self, full: np.ndarray) -> np.ndarray:
        """Project full vectors onto the free coordinates (a tied group takes its first member's value)."""
        return full[..., self._rep_index]

    def grad_to_free(self, grad_full: np.ndarray) -> np.ndarray:
        return grad_full @ self.matrix

    def clip(self, free: np.ndarray) -> np.ndarray:
        low = np.array([-np.inf if lo is None else lo for lo, _ in self.free_bounds])
        high = np.array([np.inf if hi is None else hi for _, hi in self.free_bounds])
        return np.clip(free, low, high)


def _check_fixed_within_bounds(group_names: list[str], value: float, bounds: dict) -> None:
    """A parameter fixed (or tied to one fixed) outside a bound the caller set: the two disagree, and the fit
    would silently keep the fixed value."""
    for name in group_names:
        low, high = bounds.get(name, (None, None))
        if (low is not None and value < low) or (high is not None and value > high):
            span = f"{'' if low is None else f'{low:g}'}:{'' if high is None else f'{high:g}'}"
            raise PlannerInputError(f"{name} fixed at {value:g} is outside its bound {name}={span} (--fix and --bound "
                                    "disagree; give one of them)")


def _group_bounds(form, group_names: list[str], bounds: dict) -> tuple[float | None, float | None]:
    low, high = -np.inf, np.inf
    for name in group_names:
        if name not in bounds:
            continue
        lo, hi = bounds[name]
        if name in form.log_params:
            if (lo is not None and lo <= 0) or (hi is not None and hi <= 0):
                raise PlannerInputError(f"bounds for {name} must be positive (it is fitted in log space)")
            lo, hi = (None if lo is None else np.log(lo)), (None if hi is None else np.log(hi))
        low = max(low, -np.inf if lo is None else lo)
        high = min(high, np.inf if hi is None else hi)
    if low > high:
        # Shown in the user's units (the --bound values), not the log space log parameters are fitted in; a
        # tied group is all log or all linear (ParameterMap refuses a mixed tie).
        shown = (lambda v: float(np.exp(v))) if group_names[0] in form.log_params else float
        raise PlannerInputError(f"bounds for {', '.join(group_names)} are empty ({shown(low):g} > {shown(high):g})")
    return (None if np.isinf(low) else float(low), None if np.isinf(high) else float(high))
