"""A truncated row (fewer cells than the header, as a killed writer leaves) is reported, not half-read."""

from planner.profile.runs_csv import read_runs


def test_truncated_row_is_reported_with_file_and_line_and_skipped(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text("id,gpus,step_time_s,notes\n"
                    "a,2,0.5,fine\n"
                    "b,2,0.7\n"        # cut before the last cell
                    "c,1,0.3,\n")      # an empty last cell is "not known", not truncation
    runs, problems = read_runs(path)
    assert [run.id for run in runs] == ["a", "c"]
    assert [str(p) for p in problems] == [f"{path}:3: row has fewer cells than the header (truncated?): no cell for 'notes'"]


def test_a_cell_over_the_csv_field_limit_is_reported_at_its_own_line(tmp_path):
    """It was reported a line early: csv.DictReader's line_num moves only after a row it returns, so it still named
    the previous row's line (the csv reader under it counts the line it failed in)."""
    path = tmp_path / "runs.csv"
    path.write_text("id,gpus,step_time_s,notes\n"
                    "a,2,0.5,fine\n"
                    "b,2,0.7," + "x" * 200_000 + "\n")
    runs, problems = read_runs(path)
    assert [run.id for run in runs] == ["a"]
    assert [str(p) for p in problems] == [f"{path}:3: malformed CSV (field larger than field limit (131072))"]
