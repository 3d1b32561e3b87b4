"""TREC run/qrels files: exact round trips, trec_eval tie order, and errors that name file and line."""
from __future__ import annotations

import os
import re
from pathlib import Path

import ir_measures
import pytest

from irjax.data.runs import (format_trec_run, rank_documents, read_trec_qrels, read_trec_run,
                             truncate_run, write_trec_qrels, write_trec_run)
from irjax.errors import InputFileError, MissingFileError

RUN = {
    "q2": {"d1": 3.5, "d10": 3.5, "d2": -0.125, "d3": 1e-9, "d4": 12.345678329467773},
    "q1": {"x": 0.1 + 0.2, "y": 2.0, "z": 2.0},
    "10": {"only": 7.0},
}


def test_round_trip_is_exact(tmp_path: Path) -> None:
    path = write_trec_run(RUN, tmp_path / "sub" / "run.trec", tag="bm25")
    assert read_trec_run(path) == RUN  # exact float equality, not approximate
    # No temporary files are left next to the output.
    assert sorted(os.listdir(path.parent)) == ["run.trec"]


def test_lines_are_standard_six_columns_ranked_in_trec_eval_order(tmp_path: Path) -> None:
    path = write_trec_run(RUN, tmp_path / "run.trec", tag="bm25")
    rows = [line.split() for line in path.read_text().splitlines()]
    assert all(len(row) == 6 and row[1] == "Q0" and row[5] == "bm25" for row in rows)
    q2 = [row for row in rows if row[0] == "q2"]
    # Descending score; the tie at 3.5 goes to the larger doc id ("d10" > "d1"), as trec_eval does.
    assert [row[2] for row in q2] == ["d4", "d10", "d1", "d3", "d2"]
    assert [row[3] for row in q2] == ["1", "2", "3", "4", "5"]
    q1 = [row[2] for row in rows if row[0] == "q1"]
    assert q1 == ["z", "y", "x"]
    # Queries are grouped and sorted by id.
    assert [row[0] for row in rows] == ["10"] + ["q1"] * 3 + ["q2"] * 5


def test_ir_measures_reads_our_files_identically(tmp_path: Path) -> None:
    path = write_trec_run(RUN, tmp_path / "run.trec")
    parsed: dict[str, dict[str, float]] = {}
    for doc in ir_measures.read_trec_run(str(path)):
        parsed.setdefault(doc.query_id, {})[doc.doc_id] = doc.score
    assert parsed == RUN


def test_rewriting_replaces_file_and_empty_queries_are_omitted(tmp_path: Path) -> None:
    path = tmp_path / "run.trec"
    write_trec_run(RUN, path)
    write_trec_run({"q9": {"a": 1.0}, "empty": {}}, path)
    assert read_trec_run(path) == {"q9": {"a": 1.0}}


def test_rank_documents_and_truncate_are_deterministic_on_ties() -> None:
    scores = {"a": 1.0, "c": 1.0, "b": 1.0, "z": 0.5}
    assert rank_documents(scores) == [("c", 1.0), ("b", 1.0), ("a", 1.0), ("z", 0.5)]
    assert truncate_run({"q": scores}, 2) == {"q": {"c": 1.0, "b": 1.0}}
    with pytest.raises(ValueError, match="NaN"):
        rank_documents({"a": float("nan")})
    with pytest.raises(ValueError, match="non-numeric"):
        rank_documents({"a": "high"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="at least 1"):
        truncate_run({"q": scores}, 0)


@pytest.mark.parametrize(
    "run, tag, message",
    [
        ({"q 1": {"d": 1.0}}, "t", "query id"),
        ({"q": {"d\t1": 1.0}}, "t", "doc id"),
        ({"q": {"d": 1.0}}, "my run", "run tag"),
        ({"q": {"d": float("inf")}}, "t", "infinite"),
        ({"q": {"d": float("nan")}}, "t", "NaN"),
    ],
)
def test_unwritable_runs_are_rejected(run, tag: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        format_trec_run(run, tag)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.trec"
    path.write_text(text)
    return path


GOOD = "q1 Q0 d1 1 2.5 t\n"


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("q1 Q0 d2 2 1.0\n", "expected 6 whitespace-separated fields"),
        ("q1 Q0 d2 2 1.0 t extra\n", "found 7"),
        ("q1 Q0 d2 2 high t\n", "score 'high' is not a number"),
        ("q1 Q0 d2 2 nan t\n", "not a finite number"),
        ("q1 Q0 d2 two 1.0 t\n", "rank 'two' is not an integer"),
        ("q1 Q0 d1 2 1.0 t\n", "duplicate document 'd1' for query 'q1'"),
    ],
)
def test_malformed_run_lines_name_file_and_line(tmp_path: Path, bad_line: str, message: str) -> None:
    # The bad line is line 3 (after a good line and a skipped blank line).
    path = _write(tmp_path, GOOD + "\n" + bad_line)
    with pytest.raises(InputFileError) as info:  # a user error: irjax.main prints it, no traceback
        read_trec_run(path)
    assert str(info.value).startswith(f"{path}:3: ")
    assert message in str(info.value)


def test_missing_run_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match=rf"^{re.escape(str(tmp_path / 'nope.trec'))}: no such file"):
        read_trec_run(tmp_path / "nope.trec")


def test_blank_lines_are_skipped_and_same_doc_in_other_query_is_fine(tmp_path: Path) -> None:
    path = _write(tmp_path, "\n" + GOOD + "q2 Q0 d1 1 -4e-3 t\n\n")
    assert read_trec_run(path) == {"q1": {"d1": 2.5}, "q2": {"d1": -0.004}}


def test_qrels_round_trip_and_errors(tmp_path: Path) -> None:
    qrels = {"q1": {"d1": 2, "d2": 0}, "q2": {"d1": 1, "d9": -1}}
    path = write_trec_qrels(qrels, tmp_path / "qrels.txt")
    assert path.read_text().splitlines()[0] == "q1 0 d1 2"
    assert read_trec_qrels(path) == qrels

    bad = tmp_path / "bad.qrels"
    bad.write_text("q1 0 d1 1\nq1 0 d2 relevant\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(bad))}:2: relevance 'relevant' is not an integer"):
        read_trec_qrels(bad)
    bad.write_text("q1 0 d1 1\nq1 0 d1 2\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(bad))}:2: duplicate judgment"):
        read_trec_qrels(bad)
    bad.write_text("q1 d1 1\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(bad))}:1: expected 4"):
        read_trec_qrels(bad)
    with pytest.raises(ValueError, match="not an int"):
        write_trec_qrels({"q": {"d": 1.5}}, tmp_path / "x.qrels")  # type: ignore[dict-item]
