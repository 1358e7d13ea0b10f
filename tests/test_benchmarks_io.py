"""The benchmarks' result files: finished runs read back in order, reports written as a set."""

import json

from benchmarks.io import finished_runs, write_report


def test_report_writes_json_table_and_figure_from_finished_runs(tmp_path):
    for name, size in (("b-run", 50), ("a-run", 1000)):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "result.json").write_text(json.dumps({"cell": name, "n_train": size}))
    (tmp_path / "runs" / "unfinished").mkdir()  # no result.json: not a finished run
    assert [r["cell"] for r in finished_runs(tmp_path)] == ["a-run", "b-run"]
    rows = finished_runs(tmp_path, lambda r: r["n_train"])
    assert [r["cell"] for r in rows] == ["b-run", "a-run"]

    drawn = []
    table = write_report(tmp_path, "study", "the protocol", rows, "| table |\n",
                         lambda rows, path: drawn.append((len(rows), path.name)), published={"x": 1.0})
    summary = json.loads((tmp_path / "study.json").read_text())
    assert summary["benchmark"] == "study" and summary["protocol"] == "the protocol"
    assert summary["runs"] == rows and summary["published"] == {"x": 1.0} and "cpu" in json.dumps(summary["machine"])
    assert table == (tmp_path / "study.md").read_text() == "| table |\n"
    assert drawn == [(2, "study.png")]

    write_report(tmp_path, "empty", "p", [], "| none |\n", lambda rows, path: drawn.append(path.name),
                 table_name="empty_table.md")
    assert drawn == [(2, "study.png")]  # no rows: no figure
    assert (tmp_path / "empty_table.md").is_file() and not list(tmp_path.glob(".*.tmp"))


def test_a_report_with_the_same_content_leaves_its_files_alone(tmp_path):
    rows = [{"cell": "a", "error": 1.5}]
    drawn = []

    def plot(rows, path):
        drawn.append(path.name)
        path.write_bytes(b"png")

    write_report(tmp_path, "study", "p", rows, "| a |\n", plot)
    summary = json.loads((tmp_path / "study.json").read_text())
    summary["machine"] = {"cpu": "another machine"}  # written elsewhere: only the machine differs
    (tmp_path / "study.json").write_text(json.dumps(summary))
    write_report(tmp_path, "study", "p", rows, "| a |\n", plot)
    assert drawn == ["study.png"]
    assert json.loads((tmp_path / "study.json").read_text())["machine"]["cpu"] == "another machine"
    # new content (a row, the table or a missing figure) writes the whole set again
    write_report(tmp_path, "study", "p", rows + [{"cell": "b", "error": 2.0}], "| a |\n| b |\n", plot)
    assert drawn == ["study.png", "study.png"] and len(json.loads((tmp_path / "study.json").read_text())["runs"]) == 2
    (tmp_path / "study.png").unlink()
    write_report(tmp_path, "study", "p", rows + [{"cell": "b", "error": 2.0}], "| a |\n| b |\n", plot)
    assert drawn == ["study.png"] * 3
