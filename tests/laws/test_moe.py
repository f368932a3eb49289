"""Mixture-of-experts loss law (issue 17 item 4): Krajewski et al. 2024, 'Scaling Laws for Fine-Grained
Mixture of Experts' (arXiv 2402.07871), eq. 9 with its Table 1 coefficients."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from planner.errors import PlannerInputError
from planner.laws.law_file import load_law_file
from planner.laws.moe import (KRAJEWSKI_2024, KRAJEWSKI_2024_DENSE, KRAJEWSKI_2024_E16, fit_moe_law,
                              moe_compute_optimal, moe_loss, total_params_from_active, training_flops)
from planner.laws.registry import load_law

# Krajewski et al. 2024, Table 2 (compute-optimal MoE, E = 64): active parameters ("64 x N_act"), D, G,
# FLOPs, loss.
TABLE_2 = [
    (100e6, 4.37e9, 8, 2.95e18, 3.133),
    (1e9, 28.94e9, 16, 1.93e20, 2.491),
    (3e9, 72.90e9, 16, 1.41e21, 2.245),
    (7e9, 137.60e9, 32, 6.46e21, 2.076),
    (70e9, 941.07e9, 32, 4.16e23, 1.694),
    (300e9, 2.96e12, 64, 5.69e24, 1.503),
    (1e12, 7.94e12, 64, 4.97e25, 1.367),
]


def test_published_coefficients_are_table_1():
    assert KRAJEWSKI_2024.coefficients() == {"a": 18.1, "alpha": 0.115, "b": 30.8, "beta": 0.147,
                                             "g": 2.1, "gamma": 0.58, "c": 0.47}


def test_table_2_losses_reproduced_within_1_percent():
    """Eq. 9 with Table 1's rounded coefficients at each Table 2 row (N total = N_act (8E+4)/12, section 6.1).
    Tolerance 1%: measured -0.74% to -0.85%, all rows low by about the same amount, which the 3-figure
    rounding of Table 1 explains (alpha = 0.115 +- 0.0005 alone moves the N term by +-1.3% at N = 1e11)."""
    active, tokens, granularity, _, loss = np.array(TABLE_2).T
    predicted = moe_loss(active, tokens, granularity)
    assert np.all(np.abs(predicted / loss - 1) < 0.01)
    assert np.all(np.diff(predicted) < 0)  # the ordering of Table 2


def test_table_2_flops_from_eq_10_within_half_percent():
    """Eq. 10 (routing FLOPs, c_f = 6, c_r = 14, d_model = 64 n_blocks) gives Table 2's FLOPs column
    (measured within 0.42%; the table rounds N_act, D and FLOPs to 3 figures)."""
    active, tokens, granularity, flops, _ = np.array(TABLE_2).T
    assert np.all(np.abs(training_flops(active, tokens, granularity) / flops - 1) < 0.005)


def test_table_2_compute_optimal_allocation_reproduced():
    """Section 6.2's optimisation (eq. 9 under eq. 10's FLOPs) at each Table 2 budget gives its granularity
    exactly and N_act, D within 3% (measured: N_act +1.4% to +2.5%, D -1.6% to -2.2%; the table's N_act are
    round numbers and its D follows from them)."""
    active, tokens, granularity, flops, loss = np.array(TABLE_2).T
    best = moe_compute_optimal(flops)
    assert np.array_equal(best["granularity"], granularity)
    assert np.all(np.abs(best["active_params"] / active - 1) < 0.03)
    assert np.all(np.abs(best["tokens"] / tokens - 1) < 0.03)
    assert np.all(np.abs(best["loss"] / loss - 1) < 0.01)
    assert np.allclose(training_flops(best["active_params"], best["tokens"], best["granularity"]), flops, rtol=1e-9)


def dense_compute_matching_moe(budget_flops: float) -> float:
    """Compute a dense Transformer needs (Table 1 dense law, on its compute-optimal frontier, C = 6ND) to reach
    the loss of the compute-optimal MoE at `budget_flops` (section 6.2)."""
    from scipy.optimize import brentq

    target = float(moe_compute_optimal(budget_flops)["loss"][0])
    gap = lambda log_c: float(KRAJEWSKI_2024_DENSE.predict(*KRAJEWSKI_2024_DENSE.compute_optimal(np.exp(log_c)))) - target
    return float(np.exp(brentq(gap, np.log(1e15), np.log(1e40))))


def test_moe_matches_dense_with_20x_less_compute_at_1e20():
    """Section 1 / Figure 1(b): "a compute-optimal MoE model trained with a budget of 10^20 FLOPs will achieve the
    same quality as a dense Transformer trained with a 20x greater computing budget". Measured 21.3x; tolerance
    15% (the figure is read as "20x")."""
    assert dense_compute_matching_moe(1e20) / 1e20 == pytest.approx(20.0, rel=0.15)


@pytest.mark.xfail(strict=True, reason="Figure 1(b): 'exceeding 40x when budget of 10^25 FLOPs is surpassed'; measured "
                                       "32.0x at 1e25 (34.2x at 1e26) with Table 1's rounded coefficients; the ratio "
                                       "does grow with budget (21x at 1e20) as the paper says. Not tuned")
def test_moe_advantage_exceeds_40x_beyond_1e25():
    assert dense_compute_matching_moe(1e25) / 1e25 > 40.0


def test_total_params_follow_the_papers_blocks():
    # 12 d^2 active and d^2 (8E + 4) total per block (section 6.1): 43x at E = 64; E = 1 is dense.
    assert total_params_from_active(1e9) == pytest.approx(43e9)
    assert total_params_from_active(1e9, expansion_rate=1.0) == pytest.approx(1e9)


def test_each_law_counts_its_own_training_flops():
    """One method answers "how much compute" for every law: 6ND for a dense law (whatever the active count), and
    for the MoE law eq. 10 on the active parameters: the section 6.1 blocks' from total N at the law's E (or a
    given E), or the model's own where it states them."""
    N, D = np.array([1e9, 43e9]), np.array([2e10, 1e11])
    chinchilla = load_law("chinchilla")
    assert np.array_equal(chinchilla.training_flops(N, D, active_params=N / 10, expansion_rate=8.0), 6.0 * N * D)
    moe = KRAJEWSKI_2024.with_granularity(8.0)
    assert np.allclose(moe.training_flops(43e9, D), training_flops(1e9, D, 8.0, 64.0), rtol=1e-12)
    assert np.allclose(moe.training_flops(N, D, expansion_rate=1.0), training_flops(N, D, 8.0, 1.0), rtol=1e-12)
    assert np.allclose(moe.training_flops(43e9, D, active_params=2e9), training_flops(2e9, D, 8.0, 64.0), rtol=1e-12)
    assert (moe.training_flops(43e9, D) < 6.0 * 43e9 * D).all()  # an MoE runs a fraction of its parameters


def test_granularity_lowers_loss_with_diminishing_returns():
    """Section 5.1 / eq. 4: loss falls with G as a power law towards a positive constant."""
    G = np.array([1, 2, 4, 8, 16, 1e6])
    loss = KRAJEWSKI_2024.loss(1e9, 50e9, G)
    gains = -np.diff(loss)
    assert np.all(gains > 0) and np.all(np.diff(gains[:4]) < 0)
    floor = KRAJEWSKI_2024.c + KRAJEWSKI_2024.a / 1e9**KRAJEWSKI_2024.alpha + KRAJEWSKI_2024.b / 50e9**KRAJEWSKI_2024.beta
    assert loss[-1] == pytest.approx(floor, rel=1e-3)


def test_moe_never_beats_dense_of_the_same_total_size():
    """Section 5.3: the constant a keeps an MoE above "an equivalent dense model that has a matching total
    number of parameters, all of which are active": over the fitted range (N 129M-3.7B, D 16B-130B,
    G 1-16) eq. 9 exceeds the paper's dense law (Table 1, Dense row) at equal N and D."""
    N, D, G = np.meshgrid(np.geomspace(129e6, 3.7e9, 9), np.geomspace(16e9, 130e9, 9), [1, 4, 16], indexing="ij")
    assert np.all(KRAJEWSKI_2024.loss(N, D, G) > KRAJEWSKI_2024_DENSE.predict(N, D))


def test_more_experts_lower_the_loss_at_equal_active_parameters():
    """Section 7: "larger values of E typically lead to better performance". Table 1 (E = 64) against Appendix D
    Table 8 (E = 16) at the same active parameters, tokens and granularity, over the E = 16 runs' range (active
    3M-49M, D 16B-66B, G 1-16): measured 0.07-0.24 lower at E = 64."""
    A, D, G = np.meshgrid(np.geomspace(3.1e6, 4.9e7, 5), np.geomspace(16e9, 66e9, 4), [1, 2, 4, 8, 16], indexing="ij")
    assert KRAJEWSKI_2024_E16.coefficients() == {"a": 19.64, "alpha": 0.124, "b": 57.07, "beta": 0.169,
                                                 "g": 1.18, "gamma": 0.986, "c": 0.472}
    assert np.all(moe_loss(A, D, G, law=KRAJEWSKI_2024) < moe_loss(A, D, G, law=KRAJEWSKI_2024_E16))
    # Each law converts active to total parameters at its own expansion rate.
    assert moe_loss(1e7, 3e10, law=KRAJEWSKI_2024_E16) == pytest.approx(KRAJEWSKI_2024_E16.loss(1e7 * 11, 3e10, 1.0))


def test_fit_recovers_synthetic_coefficients():
    rng = np.random.default_rng(7)
    n = 120
    N = np.exp(rng.uniform(np.log(1e8), np.log(4e9), n))
    D = np.exp(rng.uniform(np.log(1.6e10), np.log(1.3e11), n))
    G = rng.choice([1.0, 2.0, 4.0, 8.0, 16.0], n)
    truth = {"a": 12.0, "alpha": 0.1, "b": 40.0, "beta": 0.16, "g": 3.0, "gamma": 0.7, "c": 0.8}
    law = KRAJEWSKI_2024.with_coefficients(truth)
    fitted, info = fit_moe_law(N, D, G, law.loss(N, D, G))
    for name, value in truth.items():
        assert fitted.coefficients()[name] == pytest.approx(value, rel=1e-4), name
    assert info["converged"]


def test_moe_loss_refuses_bad_inputs():
    with pytest.raises(PlannerInputError, match="total_params"):
        moe_loss(1e9, 1e11, total_params=5e8)
    with pytest.raises(PlannerInputError, match="granularity"):
        moe_loss(1e9, 1e11, granularity=0.5)


def test_dense_optimize_refuses_the_moe_law():
    with pytest.raises(PlannerInputError, match="mixture-of-experts"):
        load_law("krajewski-moe")
    assert load_law("krajewski-moe", allow_moe=True) is KRAJEWSKI_2024


def test_predict_cli_active_params(cli):
    code, out, err = cli(["predict", "--law", "krajewski-moe", "--active-params", "7B", "--tokens", "137.6B",
                          "--granularity", "32", "--json"])
    assert code == 0, err
    (row,) = json.loads(out)["predictions"]
    expected = 0.47 + (2.1 / 32**0.58 + 18.1) / (7e9 * 43) ** 0.115 + 30.8 / 137.6e9**0.147
    assert row["loss"] == pytest.approx(expected, rel=1e-12)
    assert row["params"] == pytest.approx(7e9 * 43)
    assert row["compute_flop"] == pytest.approx(6.46e21, rel=0.005)  # Table 2's FLOPs (eq. 10), not 6ND


@pytest.mark.parametrize("argv, message", [
    (["--law", "krajewski-moe", "--params", "1B", "--tokens", "20B"], "--granularity"),
    (["--law", "epoch", "--params", "1B", "--tokens", "20B", "--granularity", "2"], "--granularity"),
    (["--law", "epoch", "--active-params", "1B", "--tokens", "20B"], "--active-params"),
    # The error names the flag given (it named --tokens, which was not given), and says to use --tokens.
    (["--law", "krajewski-moe", "--params", "1B", "--compute", "1e21", "--granularity", "8"], "--compute: "),
    (["--law", "krajewski-moe", "--params", "1B", "--tokens-per-param", "20", "--granularity", "8"],
     "--tokens-per-param: "),
])
def test_predict_cli_moe_flag_errors(cli, argv, message):
    code, out, err = cli(["predict", *argv])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def _write_moe_csv(path, law, rng, rows=40, drop=None):
    fields = ["run", "active_params", "total_params", "granularity", "tokens", "loss"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([c for c in fields if c != drop])
        for i in range(rows):
            active = float(np.exp(rng.uniform(np.log(3e6), np.log(9e7))))
            G, D = float(rng.choice([1, 2, 4, 8, 16])), float(np.exp(rng.uniform(np.log(16e9), np.log(130e9))))
            row = {"run": f"r{i}", "active_params": active, "total_params": 43 * active, "granularity": G,
                   "tokens": D, "loss": float(law.loss(43 * active, D, G))}
            writer.writerow([row[c] for c in fields if c != drop])


def test_fit_law_cli_moe_round_trip(cli, tmp_path):
    data, out = tmp_path / "moe.csv", tmp_path / "moe.yaml"
    _write_moe_csv(data, KRAJEWSKI_2024, np.random.default_rng(3))
    code, text, err = cli(["fit-law", str(data), "--form", "moe", "--json", "--out", str(out)])
    assert code == 0, err
    report = json.loads(text)
    for name, p in report["parameters"].items():
        assert p["value"] == pytest.approx(p["published"], rel=1e-4), name
    law = load_law_file(str(out))
    assert law.coefficients() == pytest.approx(KRAJEWSKI_2024.coefficients(), rel=1e-4)


@pytest.mark.parametrize("drop", ["active_params", "granularity", "total_params"])
def test_fit_law_cli_moe_missing_column(cli, tmp_path, drop):
    data = tmp_path / "moe.csv"
    _write_moe_csv(data, KRAJEWSKI_2024, np.random.default_rng(3), drop=drop)
    code, _, err = cli(["fit-law", str(data), "--form", "moe"])
    assert code == 2 and repr(drop) in err and len(err.strip().splitlines()) == 1


def test_fit_law_cli_moe_total_below_active(cli, tmp_path):
    data = tmp_path / "moe.csv"
    _write_moe_csv(data, KRAJEWSKI_2024, np.random.default_rng(3))
    lines = data.read_text().splitlines()
    fields = lines[1].split(",")
    fields[2] = str(float(fields[1]) / 2)  # total_params below active_params on the first row
    data.write_text("\n".join([lines[0], ",".join(fields), *lines[2:]]) + "\n")
    code, _, err = cli(["fit-law", str(data), "--form", "moe"])
    assert code == 2 and "line 2" in err and "total >= active" in err


def test_predict_cli_eq10_flops_use_the_given_expansion_rate(cli):
    """--expansion-rate 16 converted --active-params with E = 16 but computed eq. 10's FLOPs with the law's 64:
    C came out 3.6x too low (that of 0.26B active parameters)."""
    code, out, _ = cli(["predict", "--law", "krajewski-moe", "--active-params", "1B", "--expansion-rate", "16",
                        "--granularity", "8", "--tokens", "100B", "--json"])
    row = json.loads(out)["predictions"][0]
    assert code == 0 and row["params"] == pytest.approx(float(total_params_from_active(1e9, 16)))
    assert row["compute_flop"] == pytest.approx(float(training_flops(1e9, 1e11, 8, 16)), rel=1e-12)


def test_predict_refuses_an_expansion_rate_with_total_params(cli):
    """`--params N --expansion-rate E` set eq. 10's FLOPs from E while the loss stayed the law's at total N (the
    seventeenth session's CLI audit): two different models in one row. E converts --active-params only."""
    code, out, err = cli(["predict", "--law", "krajewski-moe", "--params", "10B", "--expansion-rate", "16",
                          "--granularity", "8", "--tokens", "100B"])
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "--expansion-rate: only with --active-params" in err


def test_a_fitted_moe_law_keeps_the_expansion_rate_of_its_data(cli, tmp_path):
    """Data at E = 16 (total = 11 x active): the saved law converts --active-params with 16, not the published 64
    (it read 4.3B total for 100M active instead of 1.1B)."""
    data, out = tmp_path / "moe16.csv", tmp_path / "moe16.yaml"
    fields = ["run", "active_params", "total_params", "granularity", "tokens", "loss"]
    rng = np.random.default_rng(5)
    with open(data, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(fields)
        for i in range(40):
            active = float(np.exp(rng.uniform(np.log(3e6), np.log(9e7))))
            G, D = float(rng.choice([1, 2, 4, 8, 16])), float(np.exp(rng.uniform(np.log(16e9), np.log(130e9))))
            writer.writerow([f"r{i}", active, 11 * active, G, D, float(KRAJEWSKI_2024_E16.loss(11 * active, D, G))])
    code, _, err = cli(["fit-law", str(data), "--form", "moe", "--out", str(out)])
    assert code == 0, err
    assert load_law_file(str(out)).expansion_rate == pytest.approx(16.0)
    code, text, _ = cli(["predict", "--law", str(out), "--active-params", "100M", "--tokens", "50B", "--granularity",
                         "4", "--json"])
    assert json.loads(text)["predictions"][0]["params"] == pytest.approx(1.1e9)


def test_fit_law_moe_reads_a_compute_column_as_eq_10_flops(cli, tmp_path):
    """With a C column and no tokens, D was C / (6·N_total): at E = 64 (total = 43 x active) every run's tokens
    came out ~40x too few and the fit was off. C of a MoE run is eq. 10's FLOPs on the active parameters."""
    tokens_csv, compute_csv = tmp_path / "moe.csv", tmp_path / "moe_c.csv"
    _write_moe_csv(tokens_csv, KRAJEWSKI_2024, np.random.default_rng(3))
    with open(tokens_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(compute_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "active_params", "total_params", "granularity", "C", "loss"])
        for r in rows:
            flops = float(training_flops(float(r["active_params"]), float(r["tokens"]), float(r["granularity"])))
            writer.writerow([r["run"], r["active_params"], r["total_params"], r["granularity"], flops, r["loss"]])
    code, text, err = cli(["fit-law", str(compute_csv), "--form", "moe", "--json"])
    assert code == 0, err
    for name, p in json.loads(text)["parameters"].items():
        assert p["value"] == pytest.approx(p["published"], rel=1e-3), name


def test_fit_law_cli_moe_refuses_bootstrap(cli, tmp_path):
    """The moe fit has no bootstrap: --bootstrap 50 was silently ignored; refused like --holdout-n-above."""
    data = tmp_path / "moe.csv"
    _write_moe_csv(data, KRAJEWSKI_2024, np.random.default_rng(3))
    code, _, err = cli(["fit-law", str(data), "--form", "moe", "--bootstrap", "50"])
    assert code == 2 and "--bootstrap" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli(["fit-law", str(data), "--form", "moe", "--bootstrap", "0"])  # asks for what it does
    assert code == 0, err


@pytest.mark.parametrize("flag, value", [("--level", "0.8"), ("--seed", "7")])
def test_fit_law_cli_moe_refuses_bootstrap_settings(cli, tmp_path, flag, value):
    """The moe form has no bootstrap: --level and --seed were accepted and did nothing."""
    data = tmp_path / "moe.csv"
    _write_moe_csv(data, KRAJEWSKI_2024, np.random.default_rng(3))
    code, _, err = cli(["fit-law", str(data), "--form", "moe", flag, value])
    assert code == 2 and flag in err and "moe" in err and len(err.strip().splitlines()) == 1
