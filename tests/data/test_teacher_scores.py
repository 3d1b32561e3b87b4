"""Teacher score files: TSV and TREC detected, round-tripped exactly, bad lines cited by file:line."""
import pytest

from irjax.data.teacher_scores import read_teacher_scores, write_teacher_scores
from irjax.errors import InputFileError, MissingFileError

RUN = {"q2": {"d1": 0.1 + 0.2, "d9": -3.5}, "q1": {"d3": 12.0, "d4": 1e-17}}


@pytest.mark.parametrize("fmt", ["tsv", "trec"])
def test_write_then_read_gives_identical_scores(tmp_path, fmt):
    path = write_teacher_scores(RUN, tmp_path / f"teacher.{fmt}", fmt=fmt)
    assert read_teacher_scores(path) == RUN
    first = path.read_text().splitlines()[0]
    assert first == ("q1\td3\t12.0" if fmt == "tsv" else "q1 Q0 d3 1 12.0 teacher")


def test_tsv_header_is_optional(tmp_path):
    for header in ("qid\tdocid\tscore\n", "query-id\tcorpus-id\tscore\n", ""):
        path = tmp_path / "t.tsv"
        path.write_text(header + "q1\td1\t2.5\n\nq1\td2\t-1\n")
        assert read_teacher_scores(path) == {"q1": {"d1": 2.5, "d2": -1.0}}


@pytest.mark.parametrize("text, message", [
    ("q1\td1\t1.0\nq1 Q0 d2 1 2.0 run\n", r"t\.txt:2: expected 3 tab-separated fields"),
    ("q1 Q0 d2 1 2.0 run\nq1\td1\t1.0\n", r"t\.txt:2: expected 6 whitespace-separated TREC"),
    ("q1\td1\t1.0\n\nq1\td2\thigh\n", r"t\.txt:3: score 'high' is not a number"),
    ("q1\td1\tnan\n", r"t\.txt:1: score 'nan' is not finite"),
    ("q1\td1\t1\nq2\td1\t1\nq1\td1\t2\n", r"t\.txt:3: query 'q1' and document 'd1' already scored on line 1"),
    ("q1 d1 1.0 extra\n", r"t\.txt:1: cannot tell the format"),
    ("q1 Q0 d1 first 2.0 run\n", r"t\.txt:1: rank 'first' is not an integer"),
    ("q1\t\t1.0\n", r"t\.txt:1: empty query or document id"),
    ("qid\tdocid\tscore\n", r"t\.txt: no teacher scores found"),
    ("", r"t\.txt: no teacher scores found"),
])
def test_bad_files_fail_with_file_and_line(tmp_path, text, message):
    path = tmp_path / "t.txt"
    path.write_text(text)
    with pytest.raises(InputFileError, match=message):
        read_teacher_scores(path)


def test_missing_teacher_file_is_named(tmp_path):
    with pytest.raises(MissingFileError, match="no such teacher score file"):
        read_teacher_scores(tmp_path / "t.txt")


def test_write_rejects_what_cannot_be_read_back(tmp_path):
    with pytest.raises(ValueError, match="not finite"):
        write_teacher_scores({"q": {"d": float("inf")}}, tmp_path / "t.tsv")
    with pytest.raises(ValueError, match="cannot be written to a TSV teacher file"):
        write_teacher_scores({"q": {"d\tx": 1.0}}, tmp_path / "t.tsv")
    with pytest.raises(ValueError, match="unknown teacher file format"):
        write_teacher_scores(RUN, tmp_path / "t.tsv", fmt="csv")
    assert not list(tmp_path.iterdir())  # nothing half-written
