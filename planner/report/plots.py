"""The review's figures as PNG bytes (matplotlib, Agg canvas: no display, no pyplot global state).

Each function takes the plain data planner/report/review.py builds and draws it; nothing is computed here
beyond unit conversion for the axes. matplotlib is the optional `report` extra.
"""

from __future__ import annotations

import io

import numpy as np

from planner.errors import PlannerInputError
from planner.report.render import human_count

GIB = 2.0**30
DPI = 110
PLAN_COLOR = "#d62728"
CURVE_COLOR = "#1f77b4"
# Distinct, colour-blind-friendly colours for stacked parts (tab20 order, paired light/dark kept apart).
PART_COLORS = ("#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896",
               "#9467bd", "#c5b0d5", "#8c564b", "#c49c94")


def _figure(width: float = 10.0, height: float = 4.6, columns: int = 1):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlannerInputError("plots need matplotlib: pip install 'planner[report]' (or pip install matplotlib)") from None
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, columns)
    return figure, axes


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _count_formatter():
    from matplotlib.ticker import FuncFormatter

    def label(value, _):
        for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
            if value >= scale:
                return f"{value / scale:g}{unit}"
        return f"{value:g}"

    return FuncFormatter(label)


def _plain_formatter():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _: f"{value:g}")


def isoflop(data: dict, n_definition: str) -> bytes:
    """Loss vs model size along the plan's iso-FLOP line (with the law's band), and at C/2 and 2C."""
    figure, ax = _figure()
    N = data["params"]
    styles = {0.5: (":", "0.55", "C/2"), 2.0: ("--", "0.35", "2C")}
    for factor, (style, color, name) in styles.items():
        ax.plot(N, data["curves"][factor]["loss"], style, color=color, lw=1.2, label=f"{name} = {factor * data['compute_flops']:.2g} FLOP")
    main = data["curves"][1.0]
    if main["low"] is not None:  # None: the law carries no uncertainty (laws.base.interval_basis)
        ax.fill_between(N, main["low"], main["high"], color=CURVE_COLOR, alpha=0.2,
                        label=f"law uncertainty, {data['level']:.0%} band")
    ax.plot(N, main["loss"], color=CURVE_COLOR, lw=2, label=f"plan's compute C = {data['compute_flops']:.2g} FLOP")
    ax.plot(data["chosen"]["params"], data["chosen"]["loss"], "*", color=PLAN_COLOR, ms=16, label="chosen plan")
    # Drawn over the star: the two often coincide, and both must stay visible.
    ax.plot(data["optimum"]["params"], data["optimum"]["loss"], "x", color="k", ms=11, mew=2, zorder=6,
            label="law's compute-optimal N at C")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(_count_formatter())
    ax.set_xlabel(f"model size N (parameters, {n_definition}; log scale)")
    ax.set_ylabel("predicted final loss (nats/token)")
    ax.set_title("Loss vs model size at fixed training compute (iso-FLOP, C = 6ND)")
    # The interesting part is the valleys (down to the 2C minimum), not the far tails.
    low = min(float(np.min(data["curves"][2.0]["loss"])),
              float(np.min(main["loss"] if main["low"] is None else main["low"])))
    ax.set_ylim(low - 0.015, low + 0.4)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper center", fontsize=8, ncol=2)
    return _png(figure)


def loss_curve(curve: dict) -> bytes:
    """The chosen plan's predicted loss against tokens, with the LR schedule on a second axis and the anchored
    end point marked (planner.laws.plan_curve)."""
    figure, ax = _figure()
    points = curve["points"]
    tokens = np.array([p["tokens"] for p in points])
    loss = np.array([p["loss"] for p in points])
    cooldown_start = tokens[-1] * (1.0 - curve["schedule"]["cooldown_fraction"])
    ax.axvspan(cooldown_start, tokens[-1], color="0.9", lw=0, label="cool-down")
    ax.plot(tokens, loss, "o-", color=CURVE_COLOR, ms=3, lw=2, label=f"predicted loss (shape: {curve['shape_run']})")
    ax.plot(tokens[-1], loss[-1], "*", color=PLAN_COLOR, ms=15, zorder=5, label="anchored: the loss law's L(N, D)")
    lr = ax.twinx()
    lr.plot(tokens, [p["lr_fraction"] for p in points], ":", color="0.4", lw=1.2)
    lr.set_ylim(0, 1.6)
    lr.set_ylabel("LR / peak (dotted)")
    ax.xaxis.set_major_formatter(_count_formatter())
    ax.set_xlabel("training tokens")
    ax.set_ylabel("predicted loss (nats/token)")
    ax.set_title("Loss along training under the plan's schedule (only the end point is the law's)")
    ax.set_ylim(loss[-1] - 0.05 * (loss[0] - loss[-1]) - 0.01, loss[0] + 0.02)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    return _png(figure)


RUNNER_UP_MARKERS = ("s", "D", "^", "v", "P", "X", "h")


def frontier(points: list[dict], plans: list[dict], tags: list[str], deadline_days: float) -> bytes:
    """Best loss reachable by each wall-clock, with the law band; chosen plan and runners-up marked."""
    figure, ax = _figure()
    days = np.array([p["wall_clock_days"] for p in points])
    loss = np.array([p["predicted_loss"] for p in points])
    # The law's band comes from one set of coefficient samples shared by every point: the points move
    # together within it, so it is drawn as one shaded band, not as independent-looking error bars. None when
    # the law carries no uncertainty: no band drawn.
    if points[0]["loss_low"] is not None:
        ax.fill_between(days, [p["loss_low"] for p in points], [p["loss_high"] for p in points], color=CURVE_COLOR,
                        alpha=0.15, lw=0, label="law's 80% band (shared by all points: they move together)")
    ax.plot(days, loss, "o-", color=CURVE_COLOR, ms=4, lw=1.5, label="frontier: best loss by that wall-clock")
    for p in points[:: max(1, len(points) // 8)]:
        ax.annotate(f"{p['gpus']} GPUs", (p["wall_clock_days"], p["predicted_loss"]), textcoords="offset points",
                    xytext=(4, 6), fontsize=7, color="0.3")
    # Runners-up often share the plan's wall-clock: open markers of different shapes stay readable on top
    # of each other, and the legend names them instead of labels that would collide.
    for (plan, tag), marker in zip(list(zip(plans, tags))[1:], RUNNER_UP_MARKERS):
        ax.plot(plan["wall_clock_days"], plan["predicted_loss"], marker, mfc="none", mec="0.15", mew=1.5, ms=9,
                zorder=5, label=_plan_label(tag, plan))
    ax.plot(plans[0]["wall_clock_days"], plans[0]["predicted_loss"], "*", color=PLAN_COLOR, ms=15, zorder=6,
            label=_plan_label("chosen plan", plans[0]))
    ax.axvline(deadline_days, color="0.5", ls="--", lw=1, label=f"deadline ({deadline_days:g} days)")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(_plain_formatter())
    ax.set_xlabel("wall-clock to train (days, log scale)")
    ax.set_ylabel("predicted final loss (nats/token)")
    ax.set_title("Loss vs wall-clock: no plan is both faster and better than a frontier point")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    return _png(figure)


def stacked_bars(rows: list[tuple[str, list[tuple[str, float]], float]], *, unit_scale: float, xlabel: str,
                 title: str, limit: float | None = None, limit_label: str = "",
                 total_format=None) -> bytes:
    """Horizontal stacked bars, one per plan; parts that are zero in every plan are left out of the legend."""
    names = [name for name, _ in rows[0][1]]
    used = [i for i, _ in enumerate(names) if any(parts[i][1] > 0 for _, parts, _ in rows)]
    # Tall enough for the bars and for the legend beside them (one line per part used).
    figure, ax = _figure(height=max(1.3 + 0.55 * len(rows), 0.8 + 0.2 * (len(used) + 1)))
    y = np.arange(len(rows))[::-1]
    left = np.zeros(len(rows))
    for color, i in zip(PART_COLORS * 2, used):
        values = np.array([parts[i][1] / unit_scale for _, parts, _ in rows])
        ax.barh(y, values, left=left, color=color, edgecolor="white", lw=0.5, label=names[i], height=0.6)
        left += values
    if total_format:
        # A label that would run across the limit line starts after it instead.
        line = limit / unit_scale if limit is not None else None
        for yi, end, (_, _, total) in zip(y, left, rows):
            at = max(end, line) if line is not None and end > 0.8 * line else end
            ax.annotate(total_format(total), (at, yi), textcoords="offset points", xytext=(4, -3), fontsize=8)
    if limit is not None:
        ax.axvline(limit / unit_scale, color="k", ls="--", lw=1.2, label=limit_label)
    ax.set_yticks(y, [label for label, _, _ in rows])
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.set_xlim(0, max(float(left.max()), (limit or 0) / unit_scale) * 1.18)
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(figure)


def memory(rows, hbm_bytes: float) -> bytes:
    return stacked_bars(rows, unit_scale=GIB, xlabel="memory per GPU (GiB)",
                        title="Per-GPU memory of each plan (first pipeline stage, the fullest) against HBM",
                        limit=hbm_bytes, limit_label=f"HBM capacity ({hbm_bytes / GIB:.2f} GiB)",
                        total_format=lambda total: f"{total / GIB:.1f} GiB")


def step_time(rows) -> bytes:
    return stacked_bars(rows, unit_scale=1.0, xlabel="seconds per optimizer step",
                        title="Where each step's time goes (label: seconds per step)",
                        total_format=lambda total: f"{total:.3g} s")


def _gpu_count_axis(ax, legend_loc: str = "best") -> None:
    """A GPU-count x axis (log 2, plain numbers), a grid and a legend: the scaling figures' common frame."""
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(_plain_formatter())
    ax.set_xlabel("GPUs (log scale)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc=legend_loc)


def scaling(rows: list[dict], plan: dict, deadline_days: float) -> bytes:
    """MFU and wall-clock vs GPU count for the chosen model and tokens, best layout at each count."""
    figure, (left, right) = _figure(width=11.0, height=4.3, columns=2)
    ok = [r for r in rows if r["feasible"]]
    gpus = np.array([r["gpus"] for r in ok])
    left.plot(gpus, [100 * r["mfu"] for r in ok], "o-", color=CURVE_COLOR, ms=4, label="best layout at that count")
    right.plot(gpus, [r["wall_clock_days"] for r in ok], "o-", color=CURVE_COLOR, ms=4,
               label="best layout at that count")
    right.plot(gpus, [r["ideal_wall_clock_days"] for r in ok], ":", color="0.4",
               label="perfect scaling from the chosen plan")
    left.plot(plan["gpus"], 100 * plan["mfu"], "*", color=PLAN_COLOR, ms=15, label="chosen plan")
    right.plot(plan["gpus"], plan["wall_clock_days"], "*", color=PLAN_COLOR, ms=15, label="chosen plan")
    blocked = [r["gpus"] for r in rows if not r["feasible"]]
    if blocked:
        left.plot(blocked, np.zeros(len(blocked)), "x", color="0.4", ms=8, label="no layout fits / allowed")
    right.axhline(deadline_days, color="0.5", ls="--", lw=1, label=f"deadline ({deadline_days:g} days)")
    for ax in (left, right):
        _gpu_count_axis(ax)
    left.set_ylim(bottom=-2)
    left.set_ylabel("MFU (% of dense peak)")
    left.set_title("Model FLOP utilisation vs GPUs")
    right.set_yscale("log")
    right.yaxis.set_major_formatter(_plain_formatter())
    right.set_ylabel("wall-clock for the plan's tokens (days, log scale)")
    right.set_title("Time to train the chosen model on its tokens")
    return _png(figure)


def gpu_counts(rows: list[dict], chosen_gpus: int, deadline_days: float | None) -> bytes:
    """A fixed model's best layout at each GPU count searched: MFU, and the wall-clock for its tokens with the
    90% band (step time per optimizer step where no tokens were given)."""
    figure, (left, right) = _figure(width=11.0, height=4.3, columns=2)
    gpus = np.array([r["gpus"] for r in rows])
    chosen = [r for r in rows if r["gpus"] == chosen_gpus]
    left.plot(gpus, [100 * r["mfu"] for r in rows], "o-", color=CURVE_COLOR, ms=4, label="best layout at that count")
    left.plot(chosen_gpus, 100 * chosen[0]["mfu"], "*", color=PLAN_COLOR, ms=15, label="chosen")
    timed = all(r["days"] is not None for r in rows)
    key = "days" if timed else "step_time_s"
    right.plot(gpus, [r[key] for r in rows], "o-", color=CURVE_COLOR, ms=4, label="best layout at that count")
    banded = [r for r in rows if timed and r["days_band"]]
    if banded:
        right.fill_between([r["gpus"] for r in banded], [r["days_band"][0] for r in banded],
                           [r["days_band"][1] for r in banded], color=CURVE_COLOR, alpha=0.2,
                           label="90% band (step-time error on published runs)")
    right.plot(chosen_gpus, chosen[0][key], "*", color=PLAN_COLOR, ms=15, label="chosen")
    if timed and deadline_days is not None:
        right.axhline(deadline_days, color="0.5", ls="--", lw=1, label=f"deadline ({deadline_days:g} days)")
    for ax in (left, right):
        _gpu_count_axis(ax, legend_loc="lower left")
    left.set_ylim(0, 125 * max(r["mfu"] for r in rows))  # the curve in the upper part, the legend below it
    left.set_ylabel("MFU (% of dense peak)")
    left.set_title("Model FLOP utilisation vs GPUs")
    right.set_yscale("log")
    right.yaxis.set_major_formatter(_plain_formatter())
    right.set_ylabel("wall-clock for the tokens (days, log scale)" if timed else "step time (s, log scale)")
    right.set_title("Time to train vs GPUs" if timed else "Step time vs GPUs")
    return _png(figure)


def _plan_label(tag: str, plan: dict) -> str:
    """'R1: 7.0B, 256 GPUs': how the figures name a plan (bars and frontier legend)."""
    return f"{tag}: {human_count(plan['params'])}, {plan['gpus']} GPUs"


def all_figures(review: dict) -> dict[str, bytes]:
    """Every figure of an ok review, by the names planner/report/document.py places them under."""
    plans, tags = review["plans"], review["tags"]
    bar_names = [_plan_label(tag, plan) for tag, plan in zip(tags, plans)]
    return {
        "isoflop": isoflop(review["isoflop"], review["law"]["n_definition"]),
        **({"loss_curve": loss_curve(review["loss_curve"])} if review.get("loss_curve") else {}),
        "frontier": frontier(review["frontier"], plans, tags, review["constraints"]["deadline_s"] / 86400.0),
        "memory": memory([(name, parts, total) for name, (_, parts, total) in zip(bar_names, review["memory"])],
                         plans[0]["hbm_bytes"]),
        "step_time": step_time([(name, parts, total) for name, (_, parts, total) in zip(bar_names, review["time"])]),
        "scaling": scaling(review["scaling"], plans[0], review["constraints"]["deadline_s"] / 86400.0),
    }
