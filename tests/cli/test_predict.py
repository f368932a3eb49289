"""`planner predict`: the loss of a given N and D from a built-in law or a law file (issue 14, item 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planner.laws.law_file import load_law_file
from planner.laws.published import EPOCH_2024

REPO_ROOT = Path(__file__).resolve().parents[2]
SMALL_RUNS = REPO_ROOT / "examples" / "05-fit-your-own-law" / "small_runs.csv"


def chinchilla_formula(coefficients: dict, N: float, D: float) -> float:
    """Hoffmann et al. 2022, eq. 2: E + A/N^alpha + B/D^beta, written out here rather than taken from the law."""
    c = coefficients
    return c["E"] + c["A"] / N ** c["alpha"] + c["B"] / D ** c["beta"]


def test_epoch_70b_15t_json_matches_formula(cli):
    code, out, err = cli(["predict", "--law", "epoch", "--params", "70B", "--tokens", "15T", "--json"])
    assert code == 0, err
    result = json.loads(out)
    (row,) = result["predictions"]
    # Besiroglu et al. 2024, Table 1 (as in planner/laws/published.py).
    cited = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
    assert EPOCH_2024.coefficients() == cited
    expected = chinchilla_formula(cited, 70e9, 15e12)
    assert row["loss"] == pytest.approx(expected, rel=1e-9)
    assert row["params"] == 70e9 and row["tokens"] == 15e12
    assert row["compute_flop"] == pytest.approx(6 * 70e9 * 15e12, rel=1e-12)
    assert row["tokens_per_param"] == pytest.approx(15e12 / 70e9, rel=1e-12)
    assert row["loss_low"] < row["loss"] < row["loss_high"]
    assert result["level"] == 0.8 and result["law"]["n_definition"] == "total"
    assert any("D = 1.5e+13" in w for w in result["warnings"])  # 47x beyond the fitted tokens


def test_text_output_names_n_definition_and_warns(cli):
    code, out, err = cli(["predict", "--law", "kaplan", "--params", "7B", "--tokens", "1T"])
    assert code == 0, err
    assert "non-embedding parameters" in out and "N (non-embedding)" in out
    assert "warning  kaplan: D = 1e+12" in out
    assert "assumed 0.02 relative error" in out


def test_grid_has_every_n_times_d(cli):
    code, out, err = cli(["predict", "--params", "1B,7B,70B", "--tokens", "1T,15T", "--json"])
    assert code == 0, err
    rows = json.loads(out)["predictions"]
    assert len(rows) == 3 * 2
    assert {(r["params"], r["tokens"]) for r in rows} == {(n, d) for n in (1e9, 7e9, 70e9) for d in (1e12, 15e12)}
    for r in rows:
        assert r["loss"] == pytest.approx(chinchilla_formula(EPOCH_2024.coefficients(), r["params"], r["tokens"]), rel=1e-9)
    code, out, _ = cli(["predict", "--params", "1B,7B,70B", "--tokens", "1T,15T"])
    table_rows = [line for line in out.splitlines() if line.split() and line.split()[0] in ("1B", "7B", "70B")]
    assert code == 0 and len(table_rows) == 6


def test_tokens_per_param_and_compute_set_d(cli):
    code, out, _ = cli(["predict", "--params", "1B,10B", "--tokens-per-param", "20", "--json"])
    assert code == 0
    assert [r["tokens"] for r in json.loads(out)["predictions"]] == pytest.approx([20e9, 200e9])
    code, out, _ = cli(["predict", "--params", "70B", "--compute", "1e24,6.3e24", "--json"])
    assert code == 0
    rows = json.loads(out)["predictions"]
    assert [r["tokens"] for r in rows] == pytest.approx([1e24 / (6 * 70e9), 15e12])
    assert [r["compute_flop"] for r in rows] == pytest.approx([1e24, 6.3e24])


def test_level_widens_interval_and_unique_tokens_raise_loss(cli):
    def row(*extra):
        code, out, err = cli(["predict", "--params", "7B", "--tokens", "2T", "--json", *extra])
        assert code == 0, err
        return json.loads(out)["predictions"][0]

    narrow, wide = row("--level", "0.5"), row("--level", "0.95")
    assert wide["loss_low"] < narrow["loss_low"] < narrow["loss_high"] < wide["loss_high"]
    assert row("--unique-tokens", "100B")["loss"] > row()["loss"]  # 20 epochs over 100B unique tokens


def test_law_file_round_trip(cli, tmp_path):
    law_file = tmp_path / "my-law.yaml"
    code, _, err = cli(["fit-law", SMALL_RUNS, "--bootstrap", "10", "--seed", "0", "--no-holdout",
                        "--out", law_file])
    assert code == 0, err
    law = load_law_file(str(law_file))
    code, out, err = cli(["predict", "--law", law_file, "--params", "1B,70B", "--tokens", "100B", "--json"])
    assert code == 0, err
    result = json.loads(out)
    assert result["law"]["name"] == law.name == "fitted-small_runs"
    assert len(result["predictions"]) == 2
    for r in result["predictions"]:
        assert r["loss"] == pytest.approx(chinchilla_formula(law.coefficients(), r["params"], r["tokens"]), rel=1e-9)
        assert r["loss_low"] <= r["loss"] <= r["loss_high"]
    assert any("7e+10" in w and "above the largest parameters" in w for w in result["warnings"])


def test_a_law_without_samples_prints_no_band(cli, tmp_path):
    """Helper-found: a law fitted with --bootstrap 0 printed '95% low 2.4640  95% high 2.4640' (a zero-width band
    under 'interval: central 95% band; no interval: ...') where optimize says 'no interval'."""
    law_file = tmp_path / "law.yaml"
    assert cli(["fit-law", SMALL_RUNS, "--bootstrap", "0", "--no-holdout", "--out", law_file])[0] == 0
    code, out, err = cli(["predict", "--law", law_file, "--params", "1B", "--tokens", "100B", "--level", "0.95"])
    assert code == 0, err
    assert "no interval" in out and "95%" not in out and "band" not in out
    code, out, _ = cli(["predict", "--params", "1B", "--tokens", "100B", "--level", "0.95"])
    assert "95% low" in out and "central 95% band" in out  # a law with samples keeps its band


def one_line_error(result, *fragments: str) -> str:
    code, out, err = result
    assert code == 2, (out, err)
    assert out == "" and err.endswith("\n") and err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.mark.parametrize("argv, fragments", [
    (["--law", "nope", "--params", "7B", "--tokens", "1T"], ("--law", "unknown law 'nope'")),
    (["--law", "missing.yaml", "--params", "7B", "--tokens", "1T"], ("--law missing.yaml", "no such law file")),
    (["--law", "muennighoff", "--params", "7B", "--tokens", "1T"], ("--unique-tokens",)),
    (["--params", "0", "--tokens", "1T"], ("--params", "'0'")),
    (["--params", "7B,", "--tokens", "1T"], ("--params",)),
    (["--params", "7X", "--tokens", "1T"], ("--params", "'7X'")),
    (["--params", "7B", "--tokens", "-1T"], ("--tokens",)),
    (["--params", "7B", "--tokens-per-param", "inf"], ("--tokens-per-param",)),
    (["--params", "7B", "--compute", "nan"], ("--compute",)),
    (["--params", "7B", "--tokens", "1T", "--tokens-per-param", "20"], ("--tokens-per-param", "--tokens")),
    (["--params", "7B", "--tokens", "1T", "--compute", "1e24"], ("--compute", "--tokens")),
    (["--tokens", "1T"], ("--params",)),
    (["--params", "7B"], ("--tokens", "--tokens-per-param", "--compute")),
    (["--params", "7B", "--tokens", "1T", "--level", "1"], ("--level",)),
    (["--params", "7B", "--tokens", "1T", "--unique-tokens", "0"], ("--unique-tokens",)),
    (["--params", "1e300", "--tokens-per-param", "1"], ("--params 1e+300", "C = 6ND = inf")),
    (["--params", "2T,1e-320", "--tokens", "1e21"], ("--params 1e-320", "D/N = inf")),
    (["--params", ",".join(["1B"] * 101), "--tokens", ",".join(["1T"] * 100)], ("--params x --tokens", "10,000")),
])
def test_bad_input_is_one_line_exit_2(cli, argv, fragments):
    one_line_error(cli(["predict", *argv]), *fragments)


def test_a_law_without_uncertainty_gets_no_band_in_predict(cli, tmp_path):
    """predict with a law that has neither samples nor a relative sigma printed '80% low 2.7727, 80% high 2.7727'
    and gave loss_low == loss_high == loss in JSON: a zero-width band nobody measured. optimize and report give
    none for such a law (tests/test_report.py); predict now does too: null in JSON (its table already left the band
    columns out)."""
    law = tmp_path / "no_band.yaml"
    law.write_text("planner_law_file: 1\nform: chinchilla\nname: no-band\nsource: s\nn_definition: total\n"
                   "c_definition: 6ND\ncoefficients: {E: 1.8913, A: 495.726, B: 12845.6, alpha: 0.34931, beta: 0.45305}\n"
                   "validity: {n_min: 5.7e7, n_max: 1.6e10, d_min: 2.4e8, d_max: 3.2e11, tpp_min: 0.036, tpp_max: 341.0}\n")
    code, out, err = cli(["predict", "--law", law, "--params", "1B", "--tokens", "20B", "--json"])
    assert code == 0, err
    (row,) = json.loads(out)["predictions"]
    assert row["loss"] > 0 and row["loss_low"] is None and row["loss_high"] is None
    code, out, err = cli(["predict", "--law", law, "--params", "1B", "--tokens", "20B"])
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[-1].split()[-1] == f"{row['loss']:.4f}" and "low" not in lines[-3] and "no interval" in out


@pytest.mark.parametrize("law, counted", [("epoch", "total_params"), ("kaplan", "non_embedding_params")])
def test_model_gives_n_as_the_law_counts_it(cli, law, counted):
    """--model llama3-70b: N is its total parameter count for epoch (Besiroglu et al. count total N), its
    non-embedding count for kaplan; the loss is the one --params gives for that N."""
    from planner.specs.model import preset

    model = preset("llama3-70b")
    code, out, err = cli(["predict", "--law", law, "--model", "llama3-70b", "--tokens", "15T", "--json"])
    assert code == 0, err
    result = json.loads(out)
    n = float(getattr(model, counted))
    assert result["model"] == {"name": "llama3-70b", "total_params": model.total_params,
                               "non_embedding_params": model.non_embedding_params, "vocab": 128256, "law_params": n}
    code, out, _ = cli(["predict", "--law", law, "--params", repr(n), "--tokens", "15T", "--json"])
    assert json.loads(out)["predictions"] == result["predictions"]
    assert result["predictions"][0]["params"] == n
    code, text, _ = cli(["predict", "--law", law, "--model", "llama3-70b", "--tokens-per-param", "20"])
    assert text.startswith("model llama3-70b: 70.6B parameters, 68.5B without the embeddings (vocab 128,256)")
    assert "N = --model, counted as this law counts it" in text


def test_model_from_a_file(cli, tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("layers: 24\nhidden: 2048\nheads: 16\nvocab: 50304\nseq_len: 2048\n")
    code, out, err = cli(["predict", "--model", path, "--tokens", "100B", "--json"])
    assert code == 0, err
    from planner.specs.model import make_model
    assert json.loads(out)["model"]["total_params"] == make_model("m", layers=24, hidden=2048, heads=16, vocab=50304,
                                                                  seq_len=2048).total_params


@pytest.mark.parametrize("argv, fragment", [
    (["--model", "mixtral-8x7b", "--tokens", "1T"], "--model mixtral-8x7b: a mixture-of-experts model"),
    (["--model", "llama3-8b", "--tokens", "1T", "--law", "krajewski-moe", "--granularity", "8"],
     "--model: only with a dense law"),
    (["--model", "llama3-8b", "--params", "8B", "--tokens", "1T"], "not allowed with argument --model"),
    (["--model", "no-such-model", "--tokens", "1T"], "unknown preset 'no-such-model'"),
    # the loss-curve mode fits a logged run: a model there was ignored
    (["--model", "llama3-8b", "--curve-data", "data/laws/gemstones_hot_100b.jsonl"], "--model"),
])
def test_model_refused_one_line(cli, argv, fragment):
    code, out, err = cli(["predict", *argv])
    assert code == 2 and out == ""
    assert fragment in err and len(err.strip().splitlines()) == 1


def test_a_loss_above_uniform_guessing_is_said_to_be_outside_the_law(cli):
    """`predict --model llama3-8b --tokens 1K` printed 168.6 nats, 14x the loss of guessing uniformly over its
    128,256 tokens (ln V = 11.76), with only the extrapolation warnings."""
    import json
    import math

    code, out, _ = cli(["predict", "--model", "llama3-8b", "--tokens", "1K", "--json"])
    result = json.loads(out)
    assert code == 0 and result["predictions"][0]["loss"] > math.log(128256)
    assert [w for w in result["warnings"] if "above uniform guessing" in w] == [
        "loss 168.6 at N = 8.03e+09, D = 1e+03 is above uniform guessing over the model's 128,256-token vocabulary "
        "(ln V = 11.76): no run trains to it; the law does not hold this far out"]
    code, out, _ = cli(["predict", "--model", "llama3-8b", "--tokens", "1T", "--json"])
    assert code == 0 and not [w for w in json.loads(out)["warnings"] if "uniform" in w]
