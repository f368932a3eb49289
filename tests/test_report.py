"""`planner report` and `optimize --report`: files, self-containment, content, and the data behind it.

One report is built per module (a small 500 GPU-hour problem on dgx-a100-80gb: each search takes about a
second; with the sensitivity cases, about 35 s) and inspected by several tests, on one pytest-xdist worker
(the xdist_group below), so it is built once. The headless-Chromium render test skips without Chromium.
"""

from __future__ import annotations

import ast
import base64
import dataclasses
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from planner.cli import main  # noqa: E402
from planner.report.document import FIGURES  # noqa: E402

pytestmark = pytest.mark.xdist_group("test_report")  # with --dist loadgroup (pyproject.toml): one worker builds the report

PROBLEM = ["--budget", "500gpuh", "--cluster", "dgx-a100-80gb"]
SECTIONS = ("Recommendation", "Chosen plan and runners-up", "Training hyperparameters", "Loss vs model size (iso-FLOP)",
            "Loss along training",
            "Loss vs wall-clock",
            "Memory per GPU", "Step time", "MFU vs number of GPUs", "Sensitivity", "Uncertainty", "Assumptions")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


@pytest.fixture(scope="module")
def report_run(tmp_path_factory):
    """One `planner report` run of PROBLEM for the module: its exit code, its folder, and the review data it rendered
    (build_review's result, with the cluster, law and constraints it was given), taken from the command itself."""
    from planner.report import review as review_module

    built = {}
    build_review = review_module.build_review

    def keep(cluster, law, constraints, result, **options):
        built["review"] = build_review(cluster, law, constraints, result, **options)
        built["inputs"] = (cluster, law, constraints)
        return built["review"]

    folder = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(review_module, "build_review", keep)
        code = main(["report", *PROBLEM, "--out", str(folder / "review.html")])
    return code, folder, built


@pytest.fixture(scope="module")
def written(report_run):
    code, folder, _ = report_run
    return code, folder


@pytest.fixture(scope="module")
def review(report_run):
    """The review data for PROBLEM, as the command built it, and its (cluster, law, constraints)."""
    _, _, built = report_run
    return built["review"], built["inputs"]


def test_report_writes_html_markdown_and_figures(written):
    code, folder = written
    assert code == 0
    assert (folder / "review.html").is_file() and (folder / "review.md").is_file()
    for name in FIGURES:
        png = folder / "review_figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert (folder / "review.html").stat().st_mode & 0o044, "report should be readable by others (not mkstemp's 0600)"


def test_html_is_self_contained(written):
    html = (written[1] / "review.html").read_text(encoding="utf-8")
    assert "<script" not in html.lower()
    assert not re.search(r"https?://", html), "the report must open offline: no external references"
    sources = re.findall(r'src="([^"]+)"', html)
    assert len(sources) == len(FIGURES)
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1])[:4] == b"\x89PNG"


def test_markdown_twin_has_the_same_sections_and_working_figure_links(written):
    folder = written[1]
    html = (folder / "review.html").read_text(encoding="utf-8")
    markdown = (folder / "review.md").read_text(encoding="utf-8")
    html_sections = re.findall(r"<h2>(.*?)</h2>", html)
    md_sections = re.findall(r"^## (.*)$", markdown, flags=re.M)
    assert html_sections == md_sections == list(SECTIONS)
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert len(links) == len(FIGURES)
    assert all((folder / link).is_file() for link in links)


def test_report_states_assumptions_and_sensitivity(written):
    markdown = (written[1] / "review.md").read_text(encoding="utf-8")
    for needle in ("GEMM efficiency 20% lower", "network bandwidth 20% lower", "budget 2x larger",
                   "not calibrated", "calibration", "epoch", "fitted range", "80% band", "deadline",
                   "HBM capacity", "compute (forward + backward)", "matmul_peak_fraction"):
        assert needle in markdown, needle


def test_existing_report_is_refused_before_searching(written, capsys):
    folder = written[1]
    before = (folder / "review.md").read_bytes()
    code = main(["report", *PROBLEM, "--out", str(folder / "review.html")])
    assert code == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert (folder / "review.md").read_bytes() == before


def test_out_must_be_html(tmp_path, capsys):
    assert main(["report", *PROBLEM, "--out", str(tmp_path / "review.pdf")]) == 2
    assert "expected an .html path" in capsys.readouterr().err


def test_optimize_report_flag_and_no_sensitivity(tmp_path, capsys):
    code = main(["optimize", *PROBLEM, "--report", str(tmp_path / "r.html")])
    assert code == 0
    assert "chosen plan" in capsys.readouterr().out  # optimize's own output is unchanged
    assert (tmp_path / "r.md").is_file() and (tmp_path / "r_figures" / "isoflop.png").is_file()
    assert main(["report", *PROBLEM, "--no-sensitivity", "--out", str(tmp_path / "r.html"), "--force"]) == 0
    assert "Sensitivity runs were skipped" in (tmp_path / "r.md").read_text(encoding="utf-8")


def test_infeasible_problem_still_documents_why(tmp_path):
    code = main(["report", "--target-loss", "1.0", "--cluster", "dgx-a100-80gb", "--out", str(tmp_path / "r.html")])
    assert code == 1
    markdown = (tmp_path / "r.md").read_text(encoding="utf-8")
    assert "## No feasible plan" in markdown and "choose a higher --target-loss" in markdown
    assert "## Assumptions" in markdown


def test_review_series_are_consistent_with_the_plan(review):
    data, (cluster, law, _) = review
    plan = data["plans"][0]
    # Breakdowns add up to the plan's totals.
    assert sum(v for _, v in data["memory"][0][1]) == pytest.approx(plan["memory_bytes"], rel=1e-9)
    assert sum(v for _, v in data["time"][0][1]) == pytest.approx(plan["step_time_s"], rel=1e-9)
    # The chosen point lies on its own iso-FLOP curve, no lower than the curve's minimum.
    iso = data["isoflop"]
    C = iso["compute_flops"]
    on_curve = law.predict(np.array([plan["law_params"]]), np.array([C / (6 * plan["law_params"])]))[0]
    assert on_curve == pytest.approx(plan["predicted_loss"], rel=1e-9)
    assert iso["optimum"]["loss"] <= plan["predicted_loss"] + 1e-12
    assert np.all(iso["curves"][1.0]["low"] <= iso["curves"][1.0]["loss"] + 1e-12)
    # The scaling series contains the plan's GPU count, reaching the plan's loss at least as fast as the plan
    # (it once chose the highest tokens/s, whose larger batch needed more tokens and more days than the plan).
    at_plan = [r for r in data["scaling"] if r["gpus"] == plan["gpus"]]
    assert at_plan and at_plan[0]["feasible"]
    assert at_plan[0]["wall_clock_days"] <= plan["wall_clock_days"] * (1 + 1e-9)
    # No row reaches the plan's loss on fewer tokens than the plan needs.
    assert all(r["tokens"] >= plan["tokens"] * (1 - 1e-9) for r in data["scaling"] if r["feasible"])
    # Every frontier point carries a band around its loss.
    assert all(p["loss_low"] <= p["predicted_loss"] <= p["loss_high"] for p in data["frontier"])


def test_sensitivity_moves_in_the_expected_direction(review):
    data, _ = review
    plan = data["plans"][0]
    cases = {case["key"]: case for case in data["sensitivity"]}
    assert set(cases) == {"mfu", "network", "budget"}
    assert cases["mfu"]["kept"]["wall_clock_days"] > plan["wall_clock_days"] * 1.05
    assert cases["mfu"]["kept"]["mfu"] < plan["mfu"]
    assert cases["network"]["kept"]["wall_clock_days"] >= plan["wall_clock_days"] * (1 - 1e-9)
    assert cases["budget"]["kept"] is None
    assert cases["budget"]["replanned"]["predicted_loss"] < plan["predicted_loss"]
    # Re-planning with slower compute cannot find a better loss than the original plan had.
    assert cases["mfu"]["replanned"]["predicted_loss"] >= plan["predicted_loss"] - 1e-9


def test_report_module_only_renders():
    """report/document.py turns review data into text: it imports no search, cost or law code."""
    source = Path(__file__).resolve().parents[1] / "planner" / "report" / "document.py"
    imported = {node.module for node in ast.walk(ast.parse(source.read_text(encoding="utf-8")))
                if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "planner", "planner.report.render"}, imported


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="headless render needs Debian's `chromium` (apt-get install chromium)")
def test_report_renders_in_headless_chromium(written, tmp_path):
    from matplotlib.image import imread

    html = written[1] / "review.html"
    screenshot = tmp_path / "review.png"
    with tempfile.TemporaryDirectory() as profile:
        completed = subprocess.run(
            [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
             f"--screenshot={screenshot}", "--window-size=1400,4000", html.resolve().as_uri()],
            capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    page_errors = [line for line in completed.stderr.splitlines()
                   if "CONSOLE" in line or "net::ERR" in line or "Failed to load resource" in line]
    assert not page_errors, page_errors
    pixels = imread(screenshot)
    assert pixels.shape[:2] == (4000, 1400)
    assert float(pixels[..., :3].std()) > 0.05, "the screenshot is blank"


def test_logistics_bands_contingency_and_checkpoints(review):
    data, (cluster, _, _) = review
    plan, g = data["plans"][0], data["logistics"]
    # The band brackets the plan's own figures, and the contingency covers the slow end exactly.
    assert g["wall_clock_days_band"][0] <= plan["wall_clock_days"] <= g["wall_clock_days_band"][1]
    assert g["gpu_hours_band"][0] <= plan["gpu_hours"] <= g["gpu_hours_band"][1]
    assert plan["gpu_hours"] + g["contingency_gpu_hours"] == pytest.approx(g["gpu_hours_band"][1], rel=1e-9)
    # A restartable checkpoint holds weights, fp32 master and both Adam moments: 14 bytes per parameter.
    assert g["checkpoint_bytes"] == pytest.approx(14 * plan["params"], rel=1e-12)
    assert g["storage_bytes"] == pytest.approx(g["checkpoints_kept"] * g["checkpoint_bytes"], rel=1e-12)
    # Checkpoints are written from the spec's storage bandwidth and failures from its MTBF.
    assert g["checkpoint_write_s"] == pytest.approx(g["checkpoint_bytes"] / cluster.reliability.checkpoint_bytes_per_s)
    # Energy: GPU-hours at the board's power (dgx-a100-80gb: 400 W), in joules.
    assert g["gpu_energy_j"] == pytest.approx(plan["gpu_hours"] * 3600 * 400.0, rel=1e-12)
    assert g["expected_failures"] == pytest.approx(
        plan["wall_clock_s"] * plan["gpus"] / cluster.reliability.mtbf_per_gpu_s, rel=1e-9)


@pytest.mark.parametrize("framework, dtype, per_param, contents", [
    ("megatron", "bf16", 14, "bf16 weights + fp32 master + Adam moments"),
    ("deepspeed", "fp16", 14, "fp16 weights + fp32 master + Adam moments"),
    ("megatron", "fp8", 14, "16-bit weights + fp32 master + Adam moments"),
    ("fsdp", "bf16", 12, "fp32 weights, which are the master copy, + Adam moments"),
])
def test_the_checkpoint_line_follows_the_plans_stack_and_dtype(review, framework, dtype, per_param, contents):
    """It said "bf16 weights + fp32 master + Adam moments, 14 bytes per parameter" for every plan: an fp16 plan on
    V100s, and FSDP's 12-byte checkpoints (Framework.checkpoint_bytes_per_param) whose size it printed beside it."""
    import copy

    from planner.report.document import logistics_facts
    from planner.report.review import run_logistics

    data, (cluster, _, _) = review
    plan = copy.deepcopy(data["plans"][0])
    plan["layout"].update(framework=framework, dtype=dtype)
    g = run_logistics(plan, cluster)
    assert g["checkpoint_bytes"] == pytest.approx(per_param * plan["params"], rel=1e-12)
    line = next(fact for fact in logistics_facts({**data, "plans": [plan], "logistics": g})
                if fact.startswith("Checkpoints:"))
    assert f"({contents}, {per_param} bytes per parameter)" in line


@pytest.mark.parametrize("mode", ["sync", "async", "in-memory"])
def test_the_checkpoint_line_says_how_the_specs_mode_holds_up_training(review, mode):
    """The goodput audit: the review said "written in 6.1 min every 6.1 min (Young/Daly interval)" for an async
    spec whose training stalls 5.7 ms per checkpoint, and its reliability row named only the MTBF of goodput's
    four inputs. It now says what simulate says: a sync write stalls training for the write; an async or in-memory
    one for the copy to host, the next waiting for the last to persist where the write is the longer."""
    import copy

    from planner.report.document import logistics_facts
    from planner.report.review import cluster_assumptions, run_logistics

    data, (cluster, _, _) = review
    slow = cluster.model_copy(update={"reliability": cluster.reliability.model_copy(
        update={"checkpoint_mode": mode, "checkpoint_bytes_per_s": 1e8})})
    plan = copy.deepcopy(data["plans"][0])
    g = run_logistics(plan, slow)
    line = next(fact for fact in logistics_facts({**data, "plans": [plan], "logistics": g})
                if fact.startswith("Checkpoints:"))
    if mode == "sync":
        assert "a sync write of" in line and "Young/Daly interval" in line
    else:
        assert f"{mode}: training stalls" in line and "for the copy to host" in line
        assert g["checkpoint_stall_s"] < g["checkpoint_write_s"] / 1000
        assert ("each waits for the last to persist" in line) == (g["checkpoint_interval_s"] <= g["checkpoint_write_s"] * (1 + 1e-9))
    assumptions = cluster_assumptions(slow, "bf16")
    assert (assumptions["checkpoint_mode"], assumptions["checkpoint_bytes_per_s"]) == (mode, 1e8)


def test_review_text_states_the_contingency_and_storage(written):
    markdown = (written[1] / "review.md").read_text(encoding="utf-8")
    assert "Contingency: hold back" in markdown and "storage for the 2 kept at once" in markdown


def test_plans_table_states_constant_columns_once(review):
    from planner.report.document import plans_table

    data, _ = review
    table, *note = plans_table(data)
    spent = {f"{plan['gpu_hours']:,.0f}" for plan in data["plans"]}
    if len(spent) == 1:  # the budget binds every plan: no repeated column, one sentence instead
        assert "GPU-hours" not in table[1] and note and spent.pop() in note[0][1]
    else:
        assert "GPU-hours" in table[1] and not note


def test_report_names_a_layout_as_the_cli_tables_do():
    """The review document prints a layout as the CLI's tables do (render.layout_text): the stack, each parallel
    size used, then what changes the step time. A budget plan is dense: its Layout fields' ep 1 is not shown."""
    from planner.report.document import _layout
    from planner.report.render import layout_text
    from planner.specs.layout import make_layout

    lay = make_layout(framework="megatron", tp=8, pp=2, dp=4, cp=2, zero=1, micro_batch=1, global_batch=16,
                      recompute="selective")
    plan_layout = {**lay.model_dump(), "grad_accumulation": lay.grad_accumulation, "gpus": lay.gpus}
    assert _layout(plan_layout) == "megatron tp8 pp2 cp2 dp4 z1 mb1 rc-selective"
    assert " cp" not in _layout({**plan_layout, "cp": 1})
    # A MoE Layout's fields (etp None: the experts use tp) name ep and no etp, as the fixed-model rows do.
    moe = {**lay.model_dump(), "ep": 4}
    assert layout_text(moe) == "megatron tp8 pp2 cp2 dp4 z1 mb1 ep4 rc-selective"
    assert layout_text({**moe, "etp": 1}).startswith("megatron tp8 pp2 cp2 dp4 z1 mb1 ep4 etp1")


def test_scaling_rows_name_their_layouts_as_the_plan_does(review):
    """The MFU-vs-GPUs rows print each layout with render.layout_text, as the plans table does: the plan's stack
    first, then the parallel sizes."""
    from planner.report.document import _layout

    data, _ = review
    plan = data["plans"][0]
    feasible = [row for row in data["scaling"] if row["feasible"]]
    assert feasible
    stack = f"{plan['layout']['framework']} tp"
    assert _layout(plan["layout"]).startswith(stack)
    assert all(row["layout"].startswith(stack) for row in feasible), [row["layout"] for row in feasible]


def test_loss_curve_ends_at_the_plans_predicted_loss(review):
    data, _ = review
    plan, curve = data["plans"][0], data["loss_curve"]
    assert curve["points"][-1]["loss"] == pytest.approx(plan["predicted_loss"], rel=1e-12)
    assert curve["points"][-1]["tokens"] == pytest.approx(plan["tokens"])
    assert curve["schedule"]["cooldown_fraction"] == plan["hyperparameters"]["schedule"]["cooldown_fraction"]


MOE_PROBLEM = ["--budget", "20000gpuh", "--gpus", "64", "--cluster", "dgx-h100"]


def test_report_moe_section_matches_optimize_moe(tmp_path, cli):
    """`report --moe` puts the best dense and the best MoE plan side by side, with the same numbers
    `optimize --moe` gives on the same GPUs (issue 17: the report compares them)."""

    code, out, _ = cli(["report", *MOE_PROBLEM, "--moe", "--no-sensitivity", "--json", "--out", tmp_path / "r.html"])
    assert code == 0
    written = json.loads(out)["moe_comparison"]
    code, out, _ = cli(["optimize", *MOE_PROBLEM, "--moe", "--json"])
    assert code == 0
    alone = json.loads(out)
    for side in ("dense", "moe"):
        assert written[side]["predicted_loss"] == pytest.approx(alone[side]["predicted_loss"], rel=1e-12)
        assert written[side]["model"] == alone[side]["model"]
    markdown = (tmp_path / "r.md").read_text(encoding="utf-8")
    section = markdown.split("## Dense or mixture of experts", 1)[1].split("\n## ", 1)[0]
    assert "| model | " + alone["dense"]["model"] + " | " + alone["moe"]["model"] + " |" in section
    assert f"| predicted loss | {alone['dense']['predicted_loss']:.3f} | {alone['moe']['predicted_loss']:.3f} |" in section
    winner = "MoE" if alone["winner"] == "moe" else "dense"
    assert f"{winner} wins by {abs(alone['loss_difference']):.3f} nats" in section
    # The section says which GPU counts both sides had (the audit: at one budget without --gpus, `report --moe` and
    # `optimize --moe` differed, the report holding both to the chosen plan's count without saying so).
    assert "dgx-h100, on 64 GPUs;" in section and "planned on the chosen plan's GPU count" in section
    # Without --moe the section is absent.
    code, _, _ = cli(["report", *MOE_PROBLEM, "--no-sensitivity", "--out", tmp_path / "plain.html"])
    assert code == 0 and "Dense or mixture of experts" not in (tmp_path / "plain.md").read_text(encoding="utf-8")


def test_report_moe_needs_a_budget(tmp_path, cli):
    code, _, err = cli(["report", "--target-loss", "2.2", "--moe", "--out", tmp_path / "r.html"])
    assert code == 2 and "--moe needs --budget" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.html").exists()


def test_what_binds_every_plan_is_the_budget_only_when_they_spend_it(review):
    """Helper-found: `report --budget 1000000gpuh --max-gpus 64 --deadline 7d` said 'the budget binds them all'
    of plans spending 10,752 GPU-hours; 64 GPUs for the 7-day deadline did."""
    import copy

    from planner.report.document import _what_binds_all

    from planner.search.plan_record import binding

    data = copy.deepcopy(review[0])
    plan = data["plans"][0]
    constraints, cluster = review[1][2], review[1][0]
    counts = [plan["gpus"]]  # the plan's count the largest allowed
    every_gpu = cluster.max_nodes * cluster.gpus_per_node
    spent = dataclasses.replace(constraints, gpu_seconds=plan["gpu_hours"] * 3600.0)
    plan["binds"] = binding(spent, plan, counts, every_gpu)
    data["constraints"]["budget_gpu_hours"] = plan["gpu_hours"]
    assert _what_binds_all(data) == "the budget binds"
    unspent = dataclasses.replace(constraints, gpu_seconds=1e6 * 3600.0)
    plan["binds"] = binding(unspent, plan, counts, every_gpu)
    data["constraints"]["budget_gpu_hours"] = 1e6
    text = _what_binds_all(data)
    assert f"{plan['gpus']} GPUs for the" in text and "deadline" in text and "1,000,000" in text


def test_why_not_the_lowest_loss_only_when_the_search_minimised_loss(review):
    """Helper-found: `report --target-loss 2.2` said 'Why not the lowest loss: 1.943 is reachable with 32768 GPUs
    in 16.8 days; losses within 0.1% count as equal': a cheapest-plan search ties on cost, not loss."""
    import copy

    from planner.report.document import frontier_blocks, summary_blocks

    data = copy.deepcopy(review[0])
    plan = data["plans"][0]
    data["lowest_loss"] = {**plan, "predicted_loss": plan["predicted_loss"] - 0.1}
    assert "Why not the lowest loss" in " ".join(summary_blocks(data)[1][1])
    data["constraints"]["target_loss"] = plan["predicted_loss"]
    assert "Why not the lowest loss" not in " ".join(summary_blocks(data)[1][1])
    assert "under the budget" not in frontier_blocks(data)[1][1]  # there is none: the frontier's plans cost any amount


def test_the_review_flags_a_plan_with_little_hbm_free_as_optimize_does(review):
    """Helper-found: `report --budget '$50000' --gpus 64` chose a plan with 3.18 GiB (4.0%) of 79.65 GiB free;
    optimize printed a 'risk' line for it, the review said nothing."""
    import copy

    from planner.report.document import summary_blocks

    data = copy.deepcopy(review[0])
    plan = data["plans"][0]
    plan["memory_headroom_bytes"] = 0.04 * plan["hbm_bytes"]
    assert "Risk:** only 4.0% of HBM free" in " ".join(summary_blocks(data)[1][1])
    plan["memory_headroom_bytes"] = 0.06 * plan["hbm_bytes"]
    assert "Risk" not in " ".join(summary_blocks(data)[1][1])


NO_BAND_LAW = """planner_law_file: 1
form: chinchilla
name: no-band
source: a law with neither coefficient samples nor a relative sigma
n_definition: total
c_definition: 6ND
coefficients: {E: 1.8913, A: 495.726, B: 12845.6, alpha: 0.34931, beta: 0.45305}
validity: {n_min: 5.7e7, n_max: 1.6e10, d_min: 2.4e8, d_max: 3.2e11, tpp_min: 0.036, tpp_max: 341.0}
samples: null
relative_sigma: null
"""


def test_a_law_without_uncertainty_gets_no_band(tmp_path, capsys):
    """A law with no samples and no relative sigma has no interval: optimize and the report said
    '80% band 2.091-2.091' and 'assumed relative sigma 0' (a zero-width band nobody measured)."""
    law = tmp_path / "no_band.yaml"
    law.write_text(NO_BAND_LAW)
    problem = [*PROBLEM, "--law", str(law)]
    assert main(["optimize", *problem]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.strip().startswith("loss "))
    assert "no interval: the law carries no uncertainty" in line and "band" not in line
    assert main(["optimize", *problem, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)["plan"]
    assert plan["loss_interval"] is None and plan["loss_interval_basis"].startswith("no interval")
    assert main(["report", *problem, "--no-sensitivity", "--out", str(tmp_path / "r.html")]) == 0
    markdown = (tmp_path / "r.md").read_text(encoding="utf-8")
    assert "no interval: the law carries no uncertainty" in markdown
    assert "80% band" not in markdown and "relative sigma 0" not in markdown
    assert not re.search(r"(\d\.\d{3}) \[\1-\1\]", markdown)  # no 'loss [loss-loss]' cells


def test_report_states_the_plans_hyperparameters_with_their_sources(written, review):
    """The report carries what optimize prints under 'training' (it stated none of it): learning rate, warm-up,
    schedule, weight decay, batch against its rule, optimizer, each with the source plan.hyperparameters gives."""
    markdown = (written[1] / "review.md").read_text(encoding="utf-8")
    section = markdown.split("## Training hyperparameters", 1)[1].split("\n## ", 1)[0]
    hyper = review[0]["plans"][0]["hyperparameters"]
    for setting, value, source in (
            ("peak learning rate", f"{hyper['learning_rate']['peak']:.3g}", hyper["learning_rate"]["source"]),
            ("warm-up", "1% of training", hyper["schedule"]["warmup_source"]),
            ("schedule", "1-sqrt cool-down over the last 20%", hyper["schedule"]["source"]),
            ("weight decay", "0.1", hyper["weight_decay"]["source"]),
            ("batch size", "Step Law's B_opt", hyper["batch_size"]["source"]),
            ("optimizer", "AdamW", hyper["optimizer"]["source"])):
        row = next(line for line in section.splitlines() if line.startswith(f"| {setting} |"))
        assert value in row and source in row, setting


def test_speed_line_names_the_evaluation_its_goodput_counts(written, review):
    """The plan's goodput counts the launch's evaluation passes (cost/evaluation.py); the review names them with the
    plan record's figures, which the document only renders (it imports no cost code)."""
    plan = review[0]["plans"][0]
    evaluation = plan["evaluation"]
    markdown = (written[1] / "review.md").read_text(encoding="utf-8")
    speed = next(line for line in markdown.splitlines() if "Speed:" in line)
    if evaluation["fraction"]:
        assert (f"{evaluation['iters']:g} forward-only iterations every {evaluation['interval_steps']:g} steps: "
                f"{100 * evaluation['fraction']:.2f}% of training time") in speed
    else:
        assert "evaluation" not in speed
    if plan["layout"]["framework"] in ("megatron", "deepspeed"):  # their launch files evaluate
        assert evaluation["fraction"] > 0


def test_report_of_a_huge_budget_says_what_binds_and_prints_the_budget_readably(tmp_path):
    """Helper-found: `report --budget 1e30gpuh` titled the plan '1,000,000,000,000,000,019,884,624,838,656
    GPU-hours' and never said that the deadline, not the budget, bound a plan spending 23.6M of them
    ("Infeasible is not an error: say what binds", planner/errors.py:5)."""
    out = tmp_path / "r.html"
    code = main(["report", "--budget", "1e30gpuh", "--max-gpus", "64", "--deadline", "1d", "--cluster",
                 "dgx-a100-80gb", "--no-sensitivity", "--out", str(out)])
    assert code == 0
    markdown = (tmp_path / "r.md").read_text(encoding="utf-8")
    assert markdown.startswith("# Training plan: 1e+30 GPU-hours on dgx-a100-80gb")
    assert "019,884" not in markdown
    assert "- What binds: the deadline (1.0 days) binds on 64 GPUs, the most --max-gpus allows: the plan spends " \
           "1,536 of 1e+30 GPU-hours." in markdown


def test_report_says_the_budget_binds_a_plan_that_spends_it(review):
    from planner.report.document import summary_blocks

    data, _ = review
    facts = summary_blocks(data)[1][1]
    spent = data["plans"][0]["gpu_hours"]
    assert spent == pytest.approx(500, rel=1e-6)  # PROBLEM's 500 GPU-hours, spent (search.score: budget mode)
    assert "What binds: the budget binds: the plan spends 500 of 500 GPU-hours." in facts


def test_the_budget_reviews_memory_section_says_which_phase_holds_the_peak():
    """As the fixed-model review and simulate's `peak:` line: where the chosen plan's stack frees its gradients
    between steps (FSDP2 here) the memory section names the phase that holds the peak; elsewhere it says nothing."""
    from planner.cost.estimate import simulate
    from planner.report.document import breakdown_blocks
    from planner.report.render import peak_phase_text
    from planner.specs.clusters import load_cluster
    from planner.specs.layout import Layout
    from planner.specs.model import PRESETS

    model, cluster = PRESETS["llama3-8b"], load_cluster("dgx-h100")

    def review(framework, zero):
        sim = simulate(model, Layout(dp=8, zero=zero, micro_batch=1, global_batch=8, framework=framework), cluster)
        plan = {"memory": sim["memory"], "memory_bytes": sim["memory"]["total_bytes"],
                "hbm_bytes": sim["memory"]["hbm_bytes"]}
        return {"plans": [plan], "memory": [("chosen", [("weights", 1.0)], 1.0)],
                "time": [("chosen", [("forward", 1.0)], 1.0)]}, sim["memory"]

    fsdp, fsdp_memory = review("fsdp", 3)
    text = peak_phase_text(fsdp_memory)
    assert text and ("p", f"The peak is in {text}.") in breakdown_blocks(fsdp)
    megatron, _ = review("megatron", 1)
    assert not any(block[0] == "p" and block[1].startswith("The peak") for block in breakdown_blocks(megatron))


def test_serving_gpu_hours_are_named_beside_the_training_ones(review):
    """With --inference-tokens the report's summary read '64 GPUs for 3.2 days: 10,000 GPU-hours', where 64 x 3.2
    days is 4,954: the other 5,046 served the 1T tokens, said only by optimize ('incl. ... for inference')."""
    import copy

    from planner.report.document import plans_table, summary_blocks

    data = copy.deepcopy(review[0])
    plan = data["plans"][0]
    assert "serving" not in str(summary_blocks(data)) and not any("serving" in str(b) for b in plans_table(data))
    plan["inference_gpu_hours"] = 0.25 * plan["gpu_hours"]
    data["constraints"]["inference_tokens"] = 1e12
    training = plan["gpu_hours"] - plan["inference_gpu_hours"]
    assert (f"GPU-hours ({training:,.0f} training, {plan['inference_gpu_hours']:,.0f} serving the 1T inference tokens)"
            in str(summary_blocks(data)))
    assert any("GPU-hours include serving 1T inference tokens" in str(block) for block in plans_table(data))


def test_a_cluster_without_a_price_has_no_cost_column_nor_a_dash_for_it(review):
    """'Every plan spends 10,000 GPU-hours, -: the budget binds them all' on a cluster with no price."""
    import copy

    from planner.report.document import plans_table

    data = copy.deepcopy(review[0])
    for plan in data["plans"]:
        plan["cost_usd"] = None
    table, *notes = plans_table(data)
    assert "cost" not in table[1] and not any(", -" in str(note) for note in notes)


def test_every_part_a_plan_can_have_is_in_the_review(tmp_path):
    """The review's step-time and memory tables group simulate's parts; a part in no group (the launch floor of a
    small plan, the MoE parts) was left out, and the shares did not add up to the step."""
    from planner.cost.estimate import simulate
    from planner.report.review import MEMORY_PARTS, TIME_GROUPS
    from planner.specs.clusters import load_cluster
    from planner.specs.layout import make_layout
    from planner.specs.model import PRESETS

    grouped = {part for _, parts in TIME_GROUPS for part in parts}
    labelled = {key for key, _ in MEMORY_PARTS}
    cluster = load_cluster("dgx-h100")
    for name, layout in (("llama3-8b", dict(tp=8, global_batch=8)),
                         ("mixtral-8x7b", dict(dp=8, ep=8, global_batch=16, zero=1, framework="megatron")),
                         ("llama2-13b", dict(dp=8, zero=3, offload="optimizer", global_batch=8, framework="deepspeed")),
                         ("llama2-13b", dict(tp=2, pp=2, dp=2, vpp=2, global_batch=16, zero=1, recompute="full"))):
        result = simulate(PRESETS[name], make_layout(**layout), cluster)
        assert not set(result["time"]) - grouped, (name, set(result["time"]) - grouped)
        moe_parts = {k for k in result["memory"] if k.startswith(("expert_", "moe_")) or k == "pipeline_weight_copy"}
        assert not moe_parts - labelled, (name, moe_parts - labelled)


def test_markdown_figure_links_survive_a_space_in_the_path():
    """`--out "my plan.html"`: the Markdown linked `my plan_figures/x.png` bare, which CommonMark ends at the space."""
    from planner.report import typeset

    text = typeset.to_markdown([("figure", "memory", "Memory.")], {"memory": "my plan_figures/memory.png"})
    assert "![Memory.](<my plan_figures/memory.png>)" in text
    assert "![Memory.](plan_figures/memory.png)" in typeset.to_markdown([("figure", "memory", "Memory.")],
                                                                         {"memory": "plan_figures/memory.png"})


def test_forcing_a_report_over_an_earlier_one_leaves_none_of_its_figures(tmp_path):
    """`report ... --out s.html --force` over an earlier report whose plan had figures, with a new plan that has none
    (infeasible), left the old plan's PNGs beside the new report. Forced outputs remove the figures they do not
    write; unforced ones never touch an existing file."""
    from planner.cli.report import PendingOutputs

    folder = tmp_path / "s_figures"
    folder.mkdir()
    old, kept = folder / "memory.png", folder / "step_time.png"
    for path in (old, kept):
        path.write_bytes(b"old plan")
    unforced = PendingOutputs()
    unforced.add({tmp_path / "t.html": b"<html>"}, stale=[old])
    unforced.write(force=False)
    assert old.exists()
    forced = PendingOutputs()
    forced.add({tmp_path / "s.html": b"<html>", kept: b"new plan"}, stale=[old, kept])
    forced.write(force=True)
    assert not old.exists() and kept.read_bytes() == b"new plan"
