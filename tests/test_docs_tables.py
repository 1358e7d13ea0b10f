"""The docs' measured tables equal what their committed results regenerate
(``python -m benchmarks.docs_tables``)."""

from __future__ import annotations

import hashlib
import json

from benchmarks import docs_tables, model_card


def test_every_marked_table_equals_its_results():
    assert docs_tables.stale_tables() == []


def test_every_registered_table_appears_in_the_docs():
    used = {name for path in docs_tables.DOC_FILES for name, _ in docs_tables.marked_tables(path)}
    assert set(docs_tables.TABLES) <= used


def test_a_changed_figure_is_reported_and_rewritten(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    good = docs_tables.TABLES["train_speed"]()
    stale = good.replace("| eager (double backward) | ", "| eager (double backward) | 1")
    page.write_text(f"Intro.\n\n<!-- table: train_speed -->\n{stale}<!-- /table -->\n\nAfter.\n")
    monkeypatch.setattr(docs_tables, "DOC_FILES", [page])
    monkeypatch.setattr(docs_tables, "REPO_ROOT", tmp_path)
    assert docs_tables.stale_tables() == ["page.md: table 'train_speed' differs from its results"]
    assert docs_tables.main([]) == 1
    assert docs_tables.write_tables() == ["page.md"]
    assert page.read_text() == f"Intro.\n\n<!-- table: train_speed -->\n{good}<!-- /table -->\n\nAfter.\n"
    assert docs_tables.stale_tables() == []


def test_an_indented_marker_is_reported(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    page.write_text("- item\n\n  <!-- table: train_speed -->\n  <!-- /table -->\n")
    monkeypatch.setattr(docs_tables, "DOC_FILES", [page])
    monkeypatch.setattr(docs_tables, "REPO_ROOT", tmp_path)
    assert docs_tables.stale_tables() == [
        "page.md: indented marker '<!-- table: train_speed -->' (markers start a line)",
        "page.md: indented marker '<!-- /table -->' (markers start a line)",
    ]


def test_model_card_results_are_those_of_the_bundled_checkpoint():
    """benchmarks/results/model_card.json holds the bundled checkpoint's metadata, and
    docs/model_card.md is the page rendered from it (``python -m benchmarks.model_card``)."""
    from forcefield_et.checkpoint import read_checkpoint

    card = json.loads(model_card.RESULT.read_text())
    path = docs_tables.REPO_ROOT / card["checkpoint"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == card["checkpoint_sha256"]
    meta = read_checkpoint(path)["metadata"]
    assert card["validation"] == meta["validation"]
    assert card["sources"] == meta["training"]["sources"]
    assert card["step"] == meta["training"]["step"]
    assert model_card.page(card) == (docs_tables.REPO_ROOT / "docs" / "model_card.md").read_text()


def test_a_table_without_a_final_line_break_is_refused_before_any_page_changes(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    text = ("<!-- table: first -->\nold\n<!-- /table -->\n\nProse between the tables.\n\n"
            "<!-- table: second -->\nold\n<!-- /table -->\n")
    page.write_text(text)
    monkeypatch.setattr(docs_tables, "DOC_FILES", [page])
    monkeypatch.setattr(docs_tables, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(docs_tables, "TABLES", {"first": lambda: "| a |\n|---|", "second": lambda: "| b |\n"})
    try:
        docs_tables.write_tables()
    except ValueError as error:
        assert "'first'" in str(error) and "line break" in str(error)
    else:
        raise AssertionError("a table without a final line break was written")
    assert page.read_text() == text
