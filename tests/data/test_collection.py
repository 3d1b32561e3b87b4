"""Loader contents, every rejection path (with file and line in the message) and the real collections."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from tests.helpers.collection_files import DOCS, QRELS, QUERIES, jsonl, write_collection
from irjax.data.collection import (Collection, CollectionError, Document, LoadReport, available_splits,
                                   load_collection, load_corpus, load_qrels, load_queries)

def test_good_collection_contents_and_report(tmp_path: Path) -> None:
    root = write_collection(tmp_path / "tiny")
    c = load_collection(root, "test")
    assert (c.name, c.split, c.path) == ("tiny", "test", root)
    assert c.doc_ids == ["d1", "d2", "d3", "d4"]
    assert c.documents[0] == Document("d1", "Alpha", "first document")
    assert [d.contents for d in c.documents] == ["Alpha first document", "no title here", "Title only",
                                                 "title key missing"]
    assert list(c.queries) == ["q1", "q2", "q3"]
    assert c.qrels == {"q1": {"d1": 2, "d2": 0}, "q2": {"d3": 1}}
    assert c.eval_queries() == {"q1": "alpha?", "q2": "beta?"}
    counts = c.report.counts
    assert {k: counts[k] for k in ("documents", "queries", "judgments", "eval_queries")} == {
        "documents": 4, "queries": 3, "judgments": 3, "eval_queries": 2}
    assert counts["queries_without_judgments_in_split"] == 1
    assert counts["zero_score_judgments"] == 1
    assert counts["documents_with_empty_text_but_title"] == 1
    assert counts["empty_documents"] == 0 and counts["blank_lines_corpus"] == 0
    summary = c.report.summary().splitlines()
    assert len(summary) == 3
    assert any(line.startswith("1 ") and "score 0" in line for line in summary)
    assert "Collection(name='tiny'" in repr(c) and "documents=4" in repr(c)


def test_fingerprint_is_sha256_of_corpus_bytes_and_tracks_changes(tmp_path: Path) -> None:
    root = write_collection(tmp_path / "c")
    c = load_collection(root, "test")
    assert c.fingerprint() == hashlib.sha256((root / "corpus.jsonl").read_bytes()).hexdigest()
    (root / "corpus.jsonl").write_text(jsonl(DOCS[:3]))
    assert c.fingerprint() == hashlib.sha256(jsonl(DOCS).encode()).hexdigest()  # of what was parsed
    assert load_collection(root, "test").fingerprint() != c.fingerprint()


def test_hand_built_collection_fingerprint_depends_on_documents() -> None:
    def build(docs: list[Document]) -> Collection:
        return Collection("x", "test", Path("/nowhere"), docs, {"q": "t"}, {"q": {"a": 1}}, LoadReport({}))
    a = build([Document("a", "", "one")])
    assert a.fingerprint() == build([Document("a", "", "one")]).fingerprint()
    assert a.fingerprint() != build([Document("a", "", "two")]).fingerprint()
    assert len(a.fingerprint()) == 64


def test_blank_lines_and_crlf_are_skipped_and_counted(tmp_path: Path) -> None:
    corpus = jsonl(DOCS[:2]) + "\n   \n" + jsonl(DOCS[2:])
    qrels = QRELS.replace("\n", "\r\n") + "\r\n"
    c = load_collection(write_collection(tmp_path / "c", corpus=corpus, qrels=qrels), "test")
    assert c.doc_ids == ["d1", "d2", "d3", "d4"]
    assert c.report.counts["blank_lines_corpus"] == 2
    assert c.report.counts["blank_lines_qrels"] == 1
    assert c.qrels["q1"] == {"d1": 2, "d2": 0}
    assert "2 blank lines skipped in corpus.jsonl" in c.report.summary()


def test_empty_documents_are_kept_and_counted(tmp_path: Path) -> None:
    corpus = jsonl(DOCS + [{"_id": "d5", "title": "", "text": " "}])
    qrels = QRELS + "q3\td5\t1\n"
    c = load_collection(write_collection(tmp_path / "c", corpus=corpus, qrels=qrels), "test")
    assert c.doc_ids[-1] == "d5" and c.documents[-1].contents == " "
    assert c.report.counts["empty_documents"] == 1


def test_negative_grades_and_queries_without_relevant_documents(tmp_path: Path) -> None:
    qrels = "query-id\tcorpus-id\tscore\nq1\td1\t-1\nq2\td3\t1\n"
    c = load_collection(write_collection(tmp_path / "c", qrels=qrels), "test")
    assert c.qrels["q1"] == {"d1": -1}
    assert c.report.counts["negative_score_judgments"] == 1
    assert c.report.counts["queries_without_relevant_documents"] == 1


def test_unicode_line_separator_inside_json_is_not_a_line_break(tmp_path: Path) -> None:
    corpus = jsonl([{"_id": "d1", "title": "", "text": "a\u2028b\x85c"}] + DOCS[1:])
    docs = load_corpus(write_collection(tmp_path / "c", corpus=corpus) / "corpus.jsonl")
    assert [d.doc_id for d in docs] == ["d1", "d2", "d3", "d4"] and docs[0].text == "a\u2028b\x85c"


def test_per_file_loaders_and_available_splits(tmp_path: Path) -> None:
    root = write_collection(tmp_path / "c")
    (root / "qrels" / "dev.tsv").write_text(QRELS)
    assert available_splits(root) == ["dev", "test"]
    assert available_splits(tmp_path) == []
    assert len(load_corpus(root / "corpus.jsonl")) == 4
    assert load_queries(root / "queries.jsonl")["q3"] == "unjudged"
    assert load_qrels(root / "qrels" / "dev.tsv")["q2"] == {"d3": 1}


# Each case: (file to break, its content, substrings the message must contain: file, line, field).
BAD_CORPUS = [
    ('{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": "oops"\n', ["corpus.jsonl:2:", "malformed JSON"]),
    ('{"_id": "d1", "text": "ok"}\n["d2", "text"]\n', ["corpus.jsonl:2:", "JSON object", "array"]),
    ('{"_id": "d1", "text": "ok"}\n{"text": "no id"}\n', ["corpus.jsonl:2:", "'_id'", "missing"]),
    ('{"_id": 7, "text": "int id"}\n', ["corpus.jsonl:1:", "'_id'", "\"_id\": \"7\""]),
    ('{"_id": null, "text": "x"}\n', ["corpus.jsonl:1:", "'_id'", "null"]),
    ('{"_id": " d1", "text": "x"}\n', ["corpus.jsonl:1:", "'_id'", "whitespace"]),
    ('{"_id": "d1", "text": "a"}\n{"_id": "d2", "text": "b"}\n{"_id": "d1", "text": "c"}\n',
     ["corpus.jsonl:3:", "duplicate id 'd1'", "line 1"]),
    ('{"_id": "d1", "title": "t"}\n', ["corpus.jsonl:1:", "'text'", "missing"]),
    ('{"_id": "d1", "title": 3, "text": "x"}\n', ["corpus.jsonl:1:", "'title'", "string"]),
    ('{"_id": "d1", "text": ["x"]}\n', ["corpus.jsonl:1:", "'text'", "string"]),
    ("\n\n", ["corpus.jsonl", "no documents"]),
]


@pytest.mark.parametrize("content,expected", BAD_CORPUS)
def test_bad_corpus_is_rejected_with_file_line_and_field(tmp_path: Path, content: str, expected: list[str]) -> None:
    root = write_collection(tmp_path / "c", corpus=content)
    for load in (lambda: load_collection(root, "test"), lambda: load_corpus(root / "corpus.jsonl")):
        with pytest.raises(CollectionError) as info:
            load()
        for part in expected:
            assert part in str(info.value)


BAD_QUERIES = [
    ('{"_id": "q1", "text": "a"}\n{"_id": "q2", "text": "  "}\n', ["queries.jsonl:2:", "'text'", "empty"]),
    ('{"_id": "q1", "text": "a"}\n{"_id": "q1", "text": "b"}\n', ["queries.jsonl:2:", "duplicate", "line 1"]),
    ('{"_id": "q1"}\n', ["queries.jsonl:1:", "'text'", "missing"]),
    ('{"_id": 1, "text": "a"}\n', ["queries.jsonl:1:", "'_id'", "number"]),
    ('"just a string"\n', ["queries.jsonl:1:", "JSON object", "string"]),
]


@pytest.mark.parametrize("content,expected", BAD_QUERIES)
def test_bad_queries_are_rejected(tmp_path: Path, content: str, expected: list[str]) -> None:
    root = write_collection(tmp_path / "c", queries=content, qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    with pytest.raises(CollectionError) as info:
        load_collection(root, "test")
    for part in expected:
        assert part in str(info.value)


BAD_QRELS = [
    ("query-id corpus-id score\nq1\td1\t1\n", ["test.tsv:1:", "header"]),
    ("", ["test.tsv:1:", "header", "empty file"]),
    ("q1\td1\t1\n", ["test.tsv:1:", "header", "'q1\\td1\\t1'"]),
    ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\n", ["test.tsv:3:", "3 tab-separated columns", "found 2"]),
    ("query-id\tcorpus-id\tscore\nq1\td1\t1\td9\n", ["test.tsv:2:", "found 4"]),
    ("query-id\tcorpus-id\tscore\nq1\td1\t1.0\n", ["test.tsv:2:", "'score'", "not an integer"]),
    ("query-id\tcorpus-id\tscore\nq1\td1\thigh\n", ["test.tsv:2:", "'score'"]),
    ("query-id\tcorpus-id\tscore\nq1\td1\t1_0\n", ["test.tsv:2:", "'score'"]),
    ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq9\td1\t1\nq8\td2\t1\n",
     ["test.tsv:3:", "'query-id'", "'q9'", "queries.jsonl", "2 judgment lines", "'q8'"]),
    ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\tnope\t1\n", ["test.tsv:3:", "'corpus-id'", "'nope'", "corpus.jsonl"]),
    ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td1\t2\n", ["test.tsv:3:", "duplicate judgment", "line 2"]),
    ("query-id\tcorpus-id\tscore\n\n", ["test.tsv", "no judgments"]),
]


@pytest.mark.parametrize("content,expected", BAD_QRELS)
def test_bad_qrels_are_rejected(tmp_path: Path, content: str, expected: list[str]) -> None:
    root = write_collection(tmp_path / "c", qrels=content)
    with pytest.raises(CollectionError) as info:
        load_collection(root, "test")
    for part in expected:
        assert part in str(info.value)


def test_non_utf8_byte_names_line_and_offset(tmp_path: Path) -> None:
    corpus = jsonl(DOCS[:2]).encode() + b'{"_id": "d3", "text": "caf\xe9"}\n'
    root = write_collection(tmp_path / "c", corpus=corpus)
    with pytest.raises(CollectionError) as info:
        load_collection(root, "test")
    message = str(info.value)
    assert "corpus.jsonl:3:" in message and "0xe9" in message and "byte offset 26 of the line" in message


def test_bom_is_rejected_with_advice(tmp_path: Path) -> None:
    root = write_collection(tmp_path / "c", queries=b"\xef\xbb\xbf" + jsonl(QUERIES).encode())
    with pytest.raises(CollectionError) as info:
        load_collection(root, "test")
    assert "queries.jsonl:1:" in str(info.value) and "without BOM" in str(info.value)


def test_missing_split_lists_available_ones(tmp_path: Path) -> None:
    root = write_collection(tmp_path / "c", split="dev")
    (root / "qrels" / "train.tsv").write_text(QRELS)
    with pytest.raises(CollectionError) as info:
        load_collection(root, "test")
    assert "test.tsv" in str(info.value) and "['dev', 'train']" in str(info.value)


def test_missing_files_and_folder_are_named(tmp_path: Path) -> None:
    root = write_collection(tmp_path / "c")
    (root / "queries.jsonl").unlink()
    with pytest.raises(CollectionError, match="queries.jsonl: file not found"):
        load_collection(root, "test")
    with pytest.raises(CollectionError, match="not a directory"):
        load_collection(tmp_path / "absent", "test")


def test_real_scifact_test(shared_data: Path) -> None:
    start = time.perf_counter()
    c = load_collection(shared_data / "scifact", "test")
    assert time.perf_counter() - start < 2.0
    counts = c.report.counts
    assert (len(c.documents), len(c.queries), len(c.eval_queries())) == (5183, 1109, 300)
    assert counts["judgments"] == 339 and counts["queries_without_judgments_in_split"] == 809
    assert counts["empty_documents"] == 0 and counts["documents_with_empty_text_but_title"] == 0
    assert c.doc_ids[0] == "4983" and c.documents[0].contents.startswith("Microstructural development")
    assert c.fingerprint() == hashlib.sha256((shared_data / "scifact" / "corpus.jsonl").read_bytes()).hexdigest()


def test_real_nfcorpus_dev(shared_data: Path) -> None:
    c = load_collection(shared_data / "nfcorpus", "dev")
    counts = c.report.counts
    assert (counts["documents"], counts["queries"], counts["eval_queries"], counts["judgments"]) == (
        3633, 3237, 324, 11385)
    assert c.qrels["PLAIN-1"]["MED-2421"] == 2
    assert set(available_splits(shared_data / "nfcorpus")) >= {"dev", "train"}


def test_real_cranfield_test_keeps_its_two_empty_documents(shared_data: Path) -> None:
    c = load_collection(shared_data / "cranfield", "test")
    counts = c.report.counts
    assert (counts["documents"], counts["queries"], counts["eval_queries"], counts["judgments"]) == (
        1400, 225, 225, 1612)
    assert counts["empty_documents"] == 2 and c.qrels["125"]["995"] == 2
    assert c.report.summary().splitlines() == [
        "2 documents have neither title nor text (kept so qrels naming them stay valid)"]
