"""`planner predict`: the loss a law gives for model size N and training tokens D, with its interval.

Parse -> load the law (a built-in name or a file from `planner fit-law --out`) -> law.predict and
law.predict_interval over every (N, D) pair -> render a table or JSON. D is given directly (--tokens),
as tokens per parameter (D = M·N) or as a compute budget (D = C / 6N). N is the N the law counts:
total parameters for the Chinchilla-form laws, non-embedding parameters for Kaplan's (the law's
`n_definition`, shown in the output); --model counts a preset's or model file's parameters that way.
"""

from __future__ import annotations

import math

import numpy as np

from planner.cli.arguments import RecordGiven, given, real_number, whole_number
from planner.errors import PlannerInputError
from planner.laws.annealing import COOLDOWN_SHAPES, annealing_areas, cosine_schedule, wsd_schedule
from planner.laws.base import NO_INTERVAL
from planner.laws.base import interval_basis as law_interval_basis
from planner.laws.curve_data import fit_run, read_curves
from planner.laws.plan_curve import default_decay, logged_range_warnings
from planner.laws.moe import (FITTED_EXPANSION_RATE, FineGrainedMoELaw, active_params_from_total,
                              total_params_from_active)
from planner.laws.registry import DEFAULT_LAW, load_law
from planner.report.render import human_count, json_document, table
from planner.specs.units import parse_count
from planner.laws.training_compute import dense_training_flops, tokens_for_compute

DEFAULT_LEVEL = 0.8
# A grid this large is a table nobody reads; each cell also costs one prediction per coefficient sample.
MAX_GRID_ROWS = 10_000


def register(subparsers, name: str) -> None:
    p = subparsers.add_parser(
        name, help="loss and its interval for given N and D from a loss law",
        description="Predict the final loss L(N, D) from a built-in law (see `planner laws`) or a law file from "
                    "`planner fit-law --out`, with the law's interval. Lists ('1B,7B,70B') give a grid of every "
                    "N x D. N is the parameter count the law uses: total parameters for epoch, chinchilla and "
                    "muennighoff, non-embedding parameters for kaplan, and the file's n_definition for a law file.")
    p.add_argument("--law", default=DEFAULT_LAW, metavar="NAME|FILE", action=RecordGiven,
                   help=f"built-in law name (see `planner laws`) or a law.yaml from `planner fit-law --out` "
                        f"(default {DEFAULT_LAW})")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--params", metavar="N[,N...]",
                      help="model size N as the law counts it (its n_definition: total or non-embedding parameters), "
                           "like '70B' or a list '1B,7B,70B'; for a mixture-of-experts law, total parameters")
    size.add_argument("--model", metavar="PRESET|FILE",
                      help="a model preset (see `planner simulate --list-models`) or a model YAML instead of --params: "
                           "N is its parameter count as the law counts it (total or non-embedding); dense laws only")
    size.add_argument("--active-params", metavar="N[,N...]",
                      help="mixture-of-experts laws only: active non-embedding parameters per token; total parameters "
                           "follow from --expansion-rate with Krajewski et al. 2024's blocks, N = N_act (8E + 4) / 12")
    moe = p.add_argument_group("mixture-of-experts laws (--law krajewski-moe or a moe law file)")
    moe.add_argument("--granularity", type=real_number(1.0, 1e6), metavar="G",
                     help="expert granularity G = d_ff / d_expert (1 = experts as wide as the dense FFN); required for "
                          "a moe law")
    moe.add_argument("--expansion-rate", type=real_number(1.0, 1e6), default=None, metavar="E",
                     help="with --active-params: total / active parameters of the MoE layers (default the rate the law was "
                          "fitted at: 64 for krajewski-moe, 16 for krajewski-moe-e16)")
    tokens = p.add_mutually_exclusive_group()
    tokens.add_argument("--tokens", metavar="D[,D...]", help="training tokens D, like '15T' or a list '1T,15T'")
    tokens.add_argument("--tokens-per-param", metavar="M[,M...]",
                        help="tokens per parameter instead of --tokens: D = M x N, like '20' or '20,100'")
    tokens.add_argument("--compute", metavar="C[,C...]",
                        help="training compute in FLOP instead of --tokens: D = C / (6N), like '1e24'")
    p.add_argument("--level", type=real_number(0.0, 1.0, low_open=True, high_open=True), default=DEFAULT_LEVEL,
                   action=RecordGiven,
                   help=f"central level of the loss interval (default {DEFAULT_LEVEL})")
    p.add_argument("--unique-tokens", metavar="U",
                   help="unique training data available, like '2T' (the data-constrained variant of the law, "
                        "Muennighoff et al. 2023)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    curve = p.add_argument_group(
        "loss curve (--curve-data): fit Tissue et al. 2024's LR-annealing law L = L0 + A S1^-alpha - C S2 to one run's "
        "logged losses and print its predicted curve under a schedule")
    curve.add_argument("--curve-data", metavar="HOT.jsonl",
                       help="constant-LR checkpoints (JSON lines: run_name, step, final_loss[, tokens]), e.g. "
                            "data/laws/gemstones_hot_100b.jsonl; replaces --params/--tokens")
    curve.add_argument("--cool-data", metavar="COOL.jsonl",
                       help="cool-down end losses of the same runs (linear to 0 over 10%% of the steps before them, "
                            "the Gemstones protocol), e.g. data/laws/gemstones_cool_end.jsonl; needed to fit C")
    curve.add_argument("--run", dest="run_name", metavar="NAME", help="run to fit (default: the only run in the file)")
    curve.add_argument("--steps", type=whole_number(2, 10**8), metavar="S",
                       help="length of the predicted schedule in steps (default: the run's last logged step)")
    curve.add_argument("--schedule", choices=["wsd", "cosine", "constant"],
                       help="LR schedule of the prediction (default wsd; cosine decays to 10%% of the peak, as Hoffmann "
                            "et al. 2022 trained)")
    curve.add_argument("--warmup", type=real_number(0.0, 1.0), metavar="F",
                       help="linear warm-up, fraction of the steps (default 0)")
    curve.add_argument("--cooldown", type=real_number(0.0, 1.0), metavar="F",
                       help="wsd cool-down to 0, fraction of the steps (default 0.2, Hagele et al. 2024)")
    curve.add_argument("--cooldown-shape", choices=list(COOLDOWN_SHAPES),
                       help="wsd cool-down shape (default 1-sqrt, Hagele et al. 2024)")
    curve.add_argument("--points", type=whole_number(2, 10_000), help="steps printed (default 11)")
    curve.add_argument("--decay", metavar="LAMBDA|fit",
                       help="momentum decay lambda of the annealing area, in [0, 1), or 'fit' (needs cool-downs of "
                            "two or more lengths) (default: fit where the run has them, else the lambda selected on "
                            "the Gemstones runs, as optimize's loss curve uses; the output says which)")
    p.set_defaults(run=run)


def parse_count_list(text: str, flag: str) -> np.ndarray:
    """'1B,7B,70B' -> array([1e9, 7e9, 7e10]); every item a positive count, errors naming the flag."""
    items = str(text).split(",")
    if any(not item.strip() for item in items):
        raise PlannerInputError(f"{flag}: expected a count or a comma-separated list of counts like '1B,7B,70B', "
                                f"got {text!r}")
    return np.array([parse_count(item.strip(), flag) for item in items], dtype=float)


def expansion_rate(args, law) -> float:
    """E of the query: --expansion-rate, else the moe law's own."""
    return args.expansion_rate or getattr(law, "expansion_rate", FITTED_EXPANSION_RATE)


def query_grid(args, law=None, model_params: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every (N, D) pair the flags ask for, N outermost, as two flat arrays (N total: --active-params is
    converted with --expansion-rate, by default the moe law's own; `model_params`: --model's N as the law counts
    it, model_of)."""
    if model_params is not None:
        params = np.array([model_params])
    elif args.params is not None:
        params = parse_count_list(args.params, "--params")
    else:
        params = total_params_from_active(parse_count_list(args.active_params, "--active-params"),
                                          expansion_rate(args, law))
    if isinstance(law, FineGrainedMoELaw) and args.tokens is None:
        given = "--compute" if args.compute is not None else "--tokens-per-param"  # query_grid: one of the three
        raise PlannerInputError(f"{given}: a mixture-of-experts law takes training tokens directly, like '--tokens 100B' "
                                "(its training FLOPs follow Krajewski et al.'s eq. 10, not 6ND, and D/N is ambiguous "
                                "between total and active)")
    if args.tokens is not None:
        second, flag = parse_count_list(args.tokens, "--tokens"), "--tokens"
    elif args.tokens_per_param is not None:
        second, flag = parse_count_list(args.tokens_per_param, "--tokens-per-param"), "--tokens-per-param"
    else:
        second, flag = parse_count_list(args.compute, "--compute"), "--compute"
    rows = params.size * second.size
    if rows > MAX_GRID_ROWS:
        raise PlannerInputError(f"--params x {flag}: {params.size:,} x {second.size:,} = {rows:,} rows; "
                                f"at most {MAX_GRID_ROWS:,}")
    N, X = (a.ravel() for a in np.meshgrid(params, second, indexing="ij"))
    with np.errstate(all="ignore"):  # overflow and underflow are refused just below, naming the pair
        D = {"--tokens": lambda: X, "--tokens-per-param": lambda: X * N, "--compute": lambda: tokens_for_compute(X, N)}[flag]()
        derived = np.stack([D, D / N, dense_training_flops(N, D)])
    bad = ~np.all(np.isfinite(derived) & (derived > 0), axis=0)
    if bad.any():
        i = int(np.argmax(bad))
        d, tpp, c = derived[:, i]
        raise PlannerInputError(f"--params {N[i]:.4g} with {flag} {X[i]:.4g} gives D = {d:.4g} tokens, "
                                f"D/N = {tpp:.4g}, C = 6ND = {c:.4g}: outside the range of floating-point numbers")
    return N, D


def predictions(law, N: np.ndarray, D: np.ndarray, level: float, expansion: float | None = None) -> list[dict]:
    """One record per (N, D). `expansion`: the MoE query's E (query_grid's), which sets its active parameters
    and eq. 10 FLOPs; the law's own when None."""
    with np.errstate(all="ignore"):  # a non-finite loss is refused just below
        loss = law.predict(N, D)
        low, high = law.predict_interval(N, D, level=level)
    bad = ~(np.isfinite(loss) & np.isfinite(low) & np.isfinite(high))
    if bad.any():
        i = int(np.argmax(bad))
        raise PlannerInputError(f"--law {law.name} gives no finite loss at N = {N[i]:.4g}, D = {D[i]:.4g}")
    flops = law.training_flops(N, D, expansion_rate=expansion)  # a MoE's: eq. 10 on the active parameters at E
    # No band for a law with no uncertainty (its "band" is the point twice): null, as optimize and report give.
    banded = law_interval_basis(law) is not None
    return [{"params": float(n), "tokens": float(d), "tokens_per_param": float(d / n), "compute_flop": float(c),
             "loss": float(l), "loss_low": float(lo) if banded else None, "loss_high": float(hi) if banded else None}
            for n, d, c, l, lo, hi in zip(N, D, flops, loss, low, high)]


def extrapolation_warnings(law, N: np.ndarray, D: np.ndarray) -> list[str]:
    with np.errstate(all="ignore"):  # D/N of a tiny N overflows to inf: still "far above", as it says
        return law.extrapolation_warnings(N, D)


def interval_basis(law) -> str:
    """Where the interval comes from (planner.laws.base.interval_basis), or that there is none."""
    return law_interval_basis(law) or NO_INTERVAL


_CURVE_ONLY = (("--cool-data", "cool_data"), ("--run", "run_name"), ("--steps", "steps"), ("--decay", "decay"))
# The loss-curve flags with a default: None until the curve mode fills it in, so a flag given without
# --curve-data is refused rather than ignored.
CURVE_DEFAULTS = {"schedule": "wsd", "warmup": 0.0, "cooldown": 0.2, "cooldown_shape": "1-sqrt", "points": 11}
# --decay has no fixed default: curve_decay chooses one per run (plan_curve.default_decay).


def run(args) -> int:
    if args.curve_data is not None:
        if args.schedule in ("cosine", "constant"):  # checked before the defaults fill them in
            for flag, value in (("--cooldown", args.cooldown), ("--cooldown-shape", args.cooldown_shape)):
                if value is not None:
                    raise PlannerInputError(f"{flag}: only with --schedule wsd (the {args.schedule} schedule has no "
                                            "cool-down)")
        for name, default in CURVE_DEFAULTS.items():
            if getattr(args, name) is None:
                setattr(args, name, default)
        return run_curve(args)
    for flag, name in _CURVE_ONLY + tuple((f"--{name.replace('_', '-')}", name) for name in CURVE_DEFAULTS):
        if getattr(args, name) is not None:
            raise PlannerInputError(f"{flag}: only with --curve-data (the loss-curve mode)")
    if args.params is None and args.active_params is None and args.model is None:
        raise PlannerInputError("--params: expected the model size, like '--params 70B' (or --model PRESET|FILE, "
                                "--active-params for a mixture-of-experts law, or --curve-data for a loss curve)")
    if args.tokens is None and args.tokens_per_param is None and args.compute is None:
        raise PlannerInputError("--tokens: expected the training tokens, like '--tokens 15T' (or --tokens-per-param, "
                                "--compute)")
    unique_tokens = parse_count(args.unique_tokens, "--unique-tokens") if args.unique_tokens is not None else None
    law = moe_setting(load_law(args.law, unique_tokens, allow_moe=True), args)
    model = model_of(args, law)
    N, D = query_grid(args, law, model["law_params"] if model else None)
    result = {
        "law": {"name": law.name, "form": law.form, "source": law.source, "n_definition": law.n_definition,
                "c_definition": compute_definition(law), "coefficients": law.coefficients()},
        "granularity": getattr(law, "granularity", None),
        "level": args.level,
        "interval_basis": interval_basis(law),
        "unique_tokens": unique_tokens,
        "predictions": predictions(law, N, D, args.level, expansion_rate(args, law)),
        "warnings": extrapolation_warnings(law, N, D),
    }
    if model is not None:
        result["model"] = model
        result["warnings"] += above_uniform_guessing(result["predictions"], model["vocab"])
    print(json_document(result) if args.json else format_result(result))
    return 0


def above_uniform_guessing(predictions: list[dict], vocab: int) -> list[str]:
    """A warning per predicted loss above ln(vocab), the loss of guessing every token uniformly, which an untrained
    model starts near and training only lowers (the search drops such plans: search/score.py): there the law is
    outside anything it can describe. `predict --model llama3-8b --tokens 1K` printed 168.6 nats with only the
    extrapolation warnings."""
    uniform = math.log(vocab)
    return [f"loss {p['loss']:.4g} at N = {p['params']:.3g}, D = {p['tokens']:.3g} is above uniform guessing over "
            f"the model's {vocab:,}-token vocabulary (ln V = {uniform:.4g}): no run trains to it; the law does not "
            "hold this far out" for p in predictions if p["loss"] > uniform]


def model_of(args, law) -> dict | None:
    """--model's parameter counts and its N as `law` counts it (`law_params`, which query_grid takes); None
    without --model. A mixture-of-experts model or law is refused: a dense law's N does not count experts, and a
    moe law's granularity and expansion rate are not a preset's shape alone."""
    if args.model is None:
        return None
    from planner.cli.fixed_model import model_from_flag

    model = model_from_flag(args.model)
    if isinstance(law, FineGrainedMoELaw):
        raise PlannerInputError(f"--model: only with a dense law; --law {args.law} is a mixture-of-experts law, "
                                "which takes --params or --active-params with --granularity")
    if model.is_moe:
        raise PlannerInputError(f"--model {args.model}: a mixture-of-experts model, whose experts a dense law's N "
                                "does not count; give --law krajewski-moe with --params or --active-params and "
                                "--granularity")
    counted = float(law.counted_params(model.total_params, model.non_embedding_params))
    return {"name": model.name, "total_params": int(model.total_params),
            "non_embedding_params": int(model.non_embedding_params), "vocab": model.vocab, "law_params": counted}


# What `predictions` puts in compute_flop for a mixture-of-experts law. The law's own c_definition ("6ND on
# total N") describes its generic frontier, not the eq. 10 training FLOPs on the active parameters that
# predict computes, so the output names what was computed.
MOE_COMPUTE_DEFINITION = ("MoE training FLOPs, Krajewski et al. 2024 eq. 10, on the active parameters at the "
                          "expansion rate and granularity (not 6ND on total N)")


def compute_definition(law) -> str:
    """How compute_flop was computed for `law` (see `predictions`)."""
    return MOE_COMPUTE_DEFINITION if isinstance(law, FineGrainedMoELaw) else law.c_definition


def moe_setting(law, args):
    """The law at --granularity for a moe law; the MoE flags refused for any other law."""
    if isinstance(law, FineGrainedMoELaw):
        if args.expansion_rate is not None and args.active_params is None:
            # With --params the loss is the law's at total N (its own expansion rate); E would change only the
            # FLOPs, so the two would describe different models.
            raise PlannerInputError("--expansion-rate: only with --active-params (it converts active to total "
                                    "parameters); with --params N is already the total")
        if args.granularity is None:
            raise PlannerInputError(f"--granularity: --law {args.law} is a mixture-of-experts law; give the expert "
                                    "granularity G = d_ff / d_expert, like '--granularity 8' (1 = experts as wide as the FFN)")
        return law.with_granularity(args.granularity)
    for flag, value in (("--granularity", args.granularity), ("--active-params", args.active_params),
                        ("--expansion-rate", args.expansion_rate)):
        if value is not None:
            raise PlannerInputError(f"{flag}: only for a mixture-of-experts law (--law krajewski-moe or a moe law file); "
                                    f"--law {args.law} is a {law.form} law")
    return law


def format_result(result: dict) -> str:
    law, level = result["law"], result["level"]
    pct = f"{level * 100:g}%"
    banded = result["interval_basis"] != NO_INTERVAL
    model = result.get("model")
    lines = [f"model {model['name']}: {human_count(model['total_params'])} parameters, "
             f"{human_count(model['non_embedding_params'])} without the embeddings (vocab {model['vocab']:,}); "
             f"N = {human_count(model['law_params'])}"] if model else []
    lines += [f"law {law['name']} ({law['form']}): {law['source']}",
             "  " + ", ".join(f"{k} = {v:.5g}" for k, v in law["coefficients"].items()),
             f"N = {'--model' if model else '--params'}, counted as this law counts it: {law['n_definition']} parameters; "
             f"C = {law['c_definition']}"
             + (f"; granularity G = {result['granularity']:g}" if result.get("granularity") is not None else ""),
             # a law without samples has no band: not a zero-width "95% band" with low = high = loss
             f"interval: {result['interval_basis']}" if not banded else
             f"interval: central {pct} band; {result['interval_basis']}", ""]
    flops_header = "C (eq. 10)" if law["form"] == "moe" else "C=6ND"
    headers = ["N (" + law["n_definition"] + ")", "D", "D/N", flops_header, "loss", f"{pct} low", f"{pct} high"]
    rows = [[human_count(r["params"]), human_count(r["tokens"]), f"{r['tokens_per_param']:.3g}",
             f"{r['compute_flop']:.3g}", f"{r['loss']:.4f}", *(("-",) * 2 if r["loss_low"] is None else (f"{r['loss_low']:.4f}", f"{r['loss_high']:.4f}"))]
            for r in result["predictions"]]
    if not banded:
        headers, rows = headers[:-2], [row[:-2] for row in rows]
    lines.append(table(headers, rows))
    lines += [f"warning  {w}" for w in result["warnings"]]
    return "\n".join(lines)


def prediction_schedule(args, total_steps: int):
    """LR / peak per step for --schedule."""
    warmup = int(round(args.warmup * total_steps))
    if warmup >= total_steps and args.schedule != "wsd":
        # A cosine that never starts decaying (or a constant LR never reached) is not the schedule asked for.
        raise PlannerInputError(f"--warmup {args.warmup:g}: the warm-up takes all {total_steps} steps, leaving none for "
                                f"the {args.schedule} schedule; give a fraction below 1")
    if args.schedule == "cosine":
        return cosine_schedule(total_steps, warmup)
    cooldown = int(round(args.cooldown * total_steps)) if args.schedule == "wsd" else 0
    if args.schedule == "wsd" and args.cooldown > 0 and cooldown == 0:
        # The header would say the cool-down it was asked for while the curve had none.
        raise PlannerInputError(f"--cooldown {args.cooldown:g} of {total_steps} steps is no whole step; give more "
                                "--steps or a longer --cooldown (or --schedule constant)")
    if warmup + cooldown > total_steps:
        raise PlannerInputError(f"--warmup {args.warmup:g} + --cooldown {args.cooldown:g}: more than the whole run")
    return wsd_schedule(total_steps, warmup, cooldown, args.cooldown_shape)


def _annealing_negligible(law, schedules, losses) -> bool:
    ends = [law.C * annealing_areas(lr, law.decay)[1][-1] / loss[-1] for lr, loss in zip(schedules[1:], losses[1:])]
    return max(ends, default=0.0) < 1e-3


def curve_decay(text: str | None, run) -> tuple[float | None, str]:
    """lambda to fit the run with (None: fitted) and why: --decay as given, else plan_curve.default_decay."""
    if text is None:
        return default_decay(run)
    if text == "fit":
        return None, "fitted (--decay fit)"
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value < 1.0:
        raise PlannerInputError(f"--decay: expected lambda in [0, 1) or 'fit', got {text!r}")
    return value, "given (--decay)"


def _annealing_area_peaks(law, fitted_schedules, lr) -> tuple[float, float]:
    """(the largest annealing area S2 of the fitted cool-downs, the predicted schedule's), computed once for the
    two checks below."""
    fitted = max((annealing_areas(s, law.decay)[1].max() for s in fitted_schedules[1:]), default=0.0)
    return fitted, annealing_areas(lr, law.decay)[1].max()


def _refuse_a_curve_below_zero(loss: np.ndarray, law, areas: tuple[float, float]) -> None:
    """A curve that reaches no positive loss is the annealing term C x S2 far past the run's own cool-downs (a
    lambda near 1 makes S2, the momentum-weighted LR drop, grow without bound): refused, naming how far. `predict
    --decay 0.99999 --cooldown 1` on a Gemstones run printed -1.86 nats with exit 0."""
    if np.all(np.isfinite(loss)) and loss.min() > 0:
        return
    fitted, here = areas
    raise PlannerInputError(f"--decay {law.decay:g}: the fitted curve falls to a loss of {np.nanmin(loss):.4g} under "
                            f"this schedule, its annealing area S2 reaching {here:.4g} against at most {fitted:.4g} in "
                            "the run's cool-downs; use a smaller --decay, --decay fit, or a shorter --cooldown")


# How far the predicted schedule's annealing area may exceed the largest of the fitted cool-downs before it is said
# to be extrapolated (chosen: the shapes' rounding to whole steps moves it by about 1%).
ANNEALING_AREA_SLACK = 0.05


def _annealing_beyond_the_cooldowns(law, areas: tuple[float, float]) -> list[str]:
    """A warning where the schedule's annealing area S2 is past every fitted cool-down's: C x S2 is then the law
    extrapolated (`--decay 0.9999` with the default cool-down ended 0.75 nats below the constant-LR curve, where the
    run's own cool-downs gained about 0.1)."""
    fitted, here = areas
    if fitted <= 0 or here <= fitted * (1 + ANNEALING_AREA_SLACK):
        return []
    return [f"the schedule's annealing area S2 = {here:.4g} is {here / fitted:.3g}x the largest of the run's cool-downs "
            f"({fitted:.4g}, lambda = {law.decay:g}): the cool-down's gain is extrapolated"]


def run_curve(args) -> int:
    """--curve-data: fit the annealing law to one run and print its curve under --schedule."""
    for flag, value in (("--params", args.params), ("--model", args.model), ("--active-params", args.active_params),
                        ("--tokens", args.tokens),
                        ("--tokens-per-param", args.tokens_per_param), ("--compute", args.compute),
                        ("--granularity", args.granularity), ("--unique-tokens", args.unique_tokens),
                        ("--expansion-rate", args.expansion_rate),
                        # a loss law, and the level of its interval: the curve has neither (they were ignored)
                        ("--law", args.law if given(args, "law") else None),
                        ("--level", args.level if given(args, "level") else None)):
        if value is not None:
            raise PlannerInputError(f"{flag}: not used with --curve-data (the curve is fitted to the run's own losses)")
    runs = read_curves(args.curve_data, args.cool_data)
    if args.run_name is None and len(runs) != 1:
        raise PlannerInputError(f"--run: {args.curve_data} has {len(runs)} runs; name one, e.g. --run {next(iter(runs))}")
    name = args.run_name if args.run_name is not None else next(iter(runs))
    if name not in runs:
        raise PlannerInputError(f"--run: no run {name!r} in {args.curve_data}")
    data = runs[name]
    decay, decay_basis = curve_decay(args.decay, data)
    law, info = fit_run(data, decay=decay)
    schedules, losses = info["schedules"], info["losses"]
    total = args.steps or int(data.hot_steps.max())
    lr = prediction_schedule(args, total)
    loss = law.curve(lr)
    areas = _annealing_area_peaks(law, schedules, lr)
    _refuse_a_curve_below_zero(loss, law, areas)
    beyond = _annealing_beyond_the_cooldowns(law, areas)
    at = np.unique(np.linspace(total / args.points, total, args.points).round().astype(int).clip(1, total))
    tokens_per_step = data.tokens_per_step if np.isfinite(data.tokens_per_step) else None
    rows = [{"step": int(s), "tokens": None if tokens_per_step is None else float(s * tokens_per_step),
             "lr_fraction": float(lr[s - 1]), "loss": float(loss[s - 1])} for s in at]
    rel = np.expm1(info["residuals"])
    result = {"law": {"form": "lr-annealing", "source": law.source, "coefficients": law.coefficients(),
                      "units": "S1 and S2 in peak-LR steps (LR / peak summed over steps)"},
              "decay": {"lambda": law.decay, "basis": decay_basis},
              "run": name, "fitted_points": info["points"], "cooldowns_fitted": len(data.cooldowns),
              "fit_mean_abs_rel_error": float(np.mean(np.abs(rel))),
              "warnings": ([f"the fitted annealing coefficient C is negligible (C x S2 < 0.1% of the loss at the end of "
                            f"every cool-down): with lambda = {law.decay:g} the law cannot separate these cool-downs' "
                            "gains from the constant-LR curve; try --decay fit"]
                           if _annealing_negligible(law, schedules, losses) else []) + beyond
                          + logged_range_warnings([r["step"] for r in rows], data.hot_steps.min(), data.hot_steps.max(),
                                                  name, "steps", lambda steps: f"{steps:,.0f} steps"),
              "schedule": {"kind": args.schedule, "steps": total, "warmup": args.warmup,
                           "cooldown": args.cooldown if args.schedule == "wsd" else None,
                           "cooldown_shape": args.cooldown_shape if args.schedule == "wsd" else None},
              "curve": rows}
    if args.json:
        print(json_document(result))
        return 0
    c = law.coefficients()
    lines = [f"loss curve of {name}: {law.source}",
             f"  L0 = {c['L0']:.4g}, A = {c['A']:.4g}, alpha = {c['alpha']:.4g}, C = {c['C']:.4g}; "
             f"fitted to {info['points']} points ({len(data.cooldowns)} cool-downs), mean |error| "
             f"{result['fit_mean_abs_rel_error']:.2%}",
             f"  lambda = {law.decay:g}: {decay_basis}",
             f"schedule: {args.schedule}, {total} steps" + (f", cool-down {args.cooldown:g} ({args.cooldown_shape})"
                                                          if args.schedule == "wsd" else ""), ""]
    lines[-1:-1] = [f"warning  {w}" for w in result["warnings"]]
    headers = ["step", "tokens", "LR/peak", "loss"]
    lines.append(table(headers, [[str(r["step"]), "-" if r["tokens"] is None else human_count(r["tokens"]),
                                  f"{r['lr_fraction']:.3f}", f"{r['loss']:.4f}"] for r in rows]))
    print("\n".join(lines))
    return 0
