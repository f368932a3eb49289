"""The fixed-model review: `planner report --model X --tokens D` and `optimize --model X --report`
(planner.report.fixed_model_review). Files, sections, and numbers that agree with `optimize --model --json` and
with `simulate` of the chosen layout."""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("matplotlib")

from planner.cli import main  # noqa: E402
from planner.report.fixed_model_review import FIGURES  # noqa: E402

PROBLEM = ["--model", "llama3-8b", "--tokens", "1T", "--gpus", "64,128,256"]
SECTIONS = ("Recommendation", "GPU counts", "Runners-up", "Training hyperparameters", "Memory per GPU", "Step time",
            "Assumptions")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fixed_review")
    code = main(["report", *PROBLEM, "--out", str(folder / "plan.html")])
    return code, folder


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """The same problem as `optimize --model ... --json` prints it."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["optimize", *PROBLEM, "--json"])
    assert code == 0
    return json.loads(out.getvalue())


def _sections(markdown: str) -> list[str]:
    return re.findall(r"^## (.+)$", markdown, flags=re.M)


def test_report_of_a_fixed_model_writes_html_markdown_and_figures(written):
    code, folder = written
    assert code == 0
    markdown = (folder / "plan.md").read_text(encoding="utf-8")
    html = (folder / "plan.html").read_text(encoding="utf-8")
    assert _sections(markdown) == list(SECTIONS)
    for name in FIGURES:
        assert (folder / "plan_figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](plan_figures/{name}.png)" in markdown
    # Self-contained HTML: every figure embedded, nothing fetched.
    assert html.count('src="data:image/png;base64,') == len(FIGURES) and "http" not in html.split("<body>")[1]


def test_the_review_states_the_plan_optimize_prints(written, planned):
    """Chosen count, layout, days with band and GPU-hours as `optimize --model --json` gives them, and every
    count searched in the table."""
    from planner.report.render import human_amount, human_days, human_days_range, layout_text

    markdown = (written[1] / "plan.md").read_text(encoding="utf-8")
    chosen = planned["chosen"]
    assert f"Train on **{chosen['gpus']} GPUs**" in markdown
    assert f"Layout: {layout_text(chosen['best'])}, global batch {chosen['best']['global_batch']:,} sequences" in markdown
    assert (f"Time and cost: {human_days(chosen['days'])} (90% band {human_days_range(*chosen['days_band'])}"
            in markdown)
    assert f"{human_amount(chosen['gpu_hours'])} GPU-hours" in markdown
    table = [line for line in markdown.splitlines() if re.match(r"^\| \d+", line)]
    counts = [int(re.match(r"^\| (\d+)", line).group(1)) for line in table]
    assert counts == [c["gpus"] for c in planned["counts"]]
    assert sum("(chosen)" in line for line in table) == 1
    scored = sum(c["layouts_scored"] for c in planned["counts"])
    assert f"Searched {scored:,} layouts over {len(planned['counts'])} GPU count(s)" in markdown


def test_the_breakdowns_are_the_chosen_layouts_simulation(written, planned):
    """The memory and step-time tables are simulate's parts of the chosen layout: their totals and the sum of
    their parts agree with it."""
    from planner.cost.estimate import simulate
    from planner.report.render import human_bytes, human_seconds
    from planner.search.fixed_model import plan_fixed_model
    from planner.specs.clusters import load_cluster
    from planner.specs.model import preset

    model, cluster = preset("llama3-8b"), load_cluster("dgx-h100")
    chosen = plan_fixed_model(model, cluster, [64, 128, 256], tokens=1e12).chosen
    assert chosen.gpus == planned["chosen"]["gpus"]  # the premise: the plan the command made
    sim = simulate(model, chosen.search.layout(chosen.best), cluster)
    markdown = (written[1] / "plan.md").read_text(encoding="utf-8")
    assert f"| total | {human_bytes(sim['memory']['total_bytes'])} |" in markdown
    assert f"| step | {human_seconds(sim['step_time_s'])} | 100% |" in markdown
    assert sum(sim["memory_parts"].values()) == pytest.approx(sim["memory"]["total_bytes"], rel=1e-9)
    assert sum(sim["time"].values()) == pytest.approx(sim["step_time_s"], rel=1e-9)
    for key, value in sim["time"].items():  # every part with time in it has its row
        if value > 0:
            assert f"| {key.replace('_', ' ')} | {human_seconds(value)} |" in markdown


def test_optimize_report_writes_the_same_review(tmp_path, written):
    code = main(["optimize", *PROBLEM, "--report", str(tmp_path / "plan.html")])
    assert code == 0
    ours = (tmp_path / "plan.md").read_text(encoding="utf-8").splitlines()
    theirs = (written[1] / "plan.md").read_text(encoding="utf-8").splitlines()
    # The same document but for the "Generated by ... `command`" line (the command line that made it).
    assert ours[2].startswith("Generated by planner") and theirs[2].startswith("Generated by planner")
    assert ours[:2] + ours[3:] == theirs[:2] + theirs[3:]


def test_an_infeasible_fixed_model_documents_what_binds(tmp_path, capsys):
    code = main(["report", "--model", "llama3-405b", "--gpus", "8", "--framework", "megatron",
                 "--out", str(tmp_path / "x.html")])
    markdown = (tmp_path / "x.md").read_text(encoding="utf-8")
    assert code == 1 and "## No feasible plan" in markdown and "memory binds" in markdown
    assert "no feasible plan: memory binds" in capsys.readouterr().out


@pytest.mark.parametrize("argv, flag", [
    (["--model", "llama3-8b", "--gpus", "64", "--moe", "--budget", "100gpuh"], "--moe"),
    (["--budget", "1000gpuh", "--tokens", "1T"], "--tokens"),
    (["--budget", "1000gpuh", "--global-batch", "512"], "--global-batch"),
    (["--model", "llama3-8b", "--gpus", "64", "--no-sensitivity"], "--no-sensitivity"),  # it ran no such search
])
def test_flags_of_the_other_question_are_refused_before_anything_is_written(tmp_path, capsys, argv, flag):
    code = main(["report", *argv, "--out", str(tmp_path / "r.html")])
    err = capsys.readouterr().err
    assert code == 2 and flag in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_an_existing_figure_of_the_fixed_model_review_is_refused_before_the_search(tmp_path, capsys, monkeypatch):
    """Its own figures (not the budget review's) are checked before anything is searched or written."""
    from planner.search import fixed_model

    (tmp_path / "r_figures").mkdir()
    (tmp_path / "r_figures" / "gpu_counts.png").write_bytes(b"mine")
    monkeypatch.setattr(fixed_model, "search_layouts", lambda *a, **k: pytest.fail("searched"))
    code = main(["report", "--model", "llama3-8b", "--gpus", "64", "--out", str(tmp_path / "r.html")])
    err = capsys.readouterr().err
    assert code == 2 and "gpu_counts.png: already exists" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["gpu_counts.png", "r_figures"]


def test_the_memory_section_says_which_phase_holds_the_peak():
    """Where the stack frees its gradients between steps (FSDP2 here), the review says what simulate's `peak:` line
    says; where nothing is left out of the total it says nothing."""
    from planner.cost.estimate import simulate
    from planner.report.fixed_model_review import breakdown_blocks
    from planner.report.render import peak_phase_text
    from planner.specs.clusters import load_cluster
    from planner.specs.layout import Layout
    from planner.specs.model import PRESETS

    model, cluster = PRESETS["llama3-8b"], load_cluster("dgx-h100")
    view = {"memory_parts": [("weights", 1.0)], "memory_bytes": 1.0, "hbm_bytes": 2.0, "step_time_s": 1.0,
            "time_parts": [("forward", 1.0)]}
    fsdp = simulate(model, Layout(dp=8, zero=3, micro_batch=1, global_batch=8, framework="fsdp"), cluster)["memory"]
    megatron = simulate(model, Layout(dp=8, zero=1, micro_batch=1, global_batch=8, framework="megatron"),
                        cluster)["memory"]
    text = peak_phase_text(fsdp)
    assert text.startswith("the forward's activations;") and "fp32 copy" not in text
    assert peak_phase_text(megatron) is None
    assert ("p", f"The peak is in {text}.") in breakdown_blocks({"chosen": {**view, "memory_peak": text}})
    assert not any(block[0] == "p" and block[1].startswith("The peak")
                   for block in breakdown_blocks({"chosen": {**view, "memory_peak": None}}))


def test_the_review_states_the_limits_with_their_values(tmp_path):
    """Helper-found: the review imported two functions named limits_given, and the later one (the limits' names alone)
    shadowed the one with their values, so its "limits" row read "deadline, budget"."""
    code = main(["report", "--model", "gpt2-small", "--tokens", "10B", "--gpus", "8,16", "--deadline", "30d",
                 "--budget", "5000gpuh", "--out", str(tmp_path / "r.html")])
    markdown = (tmp_path / "r.md").read_text(encoding="utf-8")
    assert code in (0, 1) and "| limits | deadline 30.0 days, budget 5,000 GPU-hours |" in markdown
