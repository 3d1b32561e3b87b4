"""Streamed corpora: the byte-offset index reads exactly what the whole-file loader reads, names
file:line for bad lines, finds duplicate ids, and is rebuilt when the file changes."""
import json
import os

import pytest

from irjax.data.collection import CollectionError, load_collection
from irjax.data.corpus_index import CorpusIndex


def write_beir(root, corpus_lines, qrels="q1\td2\t1\n"):
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(line + "\n" for line in corpus_lines),
                                       encoding="utf-8")
    (root / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "a query"}) + "\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return root


def doc(i, text=None, title=""):
    return json.dumps({"_id": f"d{i}", "title": title, "text": f"text of d{i} é" if text is None
                       else text}, ensure_ascii=False)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IRJAX_CACHE_DIR", str(tmp_path / "cache"))


def test_streamed_collection_equals_the_loaded_one(tmp_path, shared_data):
    full = load_collection(shared_data / "scifact", "test")
    streamed = load_collection(shared_data / "scifact", "test", streamed=True)
    assert len(streamed.documents) == len(full.documents) == 5183
    assert list(streamed.documents) == full.documents
    assert list(streamed.doc_ids) == full.doc_ids
    assert streamed.documents[17] == full.documents[17]
    assert streamed.documents[-1] == full.documents[-1]
    assert streamed.documents[100:105] == full.documents[100:105]
    assert streamed.fingerprint() == full.fingerprint()
    assert streamed.report.counts == full.report.counts
    assert (streamed.queries, streamed.qrels) == (full.queries, full.qrels)


def test_rows_ids_and_windows(tmp_path):
    root = write_beir(tmp_path / "c", [doc(1), "", doc(2, title="T"), doc(3, text="")])
    index = CorpusIndex.open(root / "corpus.jsonl")
    assert len(index) == 3 and index.doc_ids() == ["d1", "d2", "d3"]
    assert [int(x) for x in index.lines] == [1, 3, 4]
    assert index.row_of("d2") == 1 and index.row_of("d9") is None
    assert index.counts == {"blank_lines_corpus": 1, "documents_with_empty_text_but_title": 0,
                            "empty_documents": 1}
    windows = list(index.windows(range(0, 3), 2))
    assert [(start, [d.doc_id for d in docs]) for start, docs in windows] == [
        (0, ["d1", "d2"]), (2, ["d3"])]
    assert index.read(1, 2)[0].contents == "T text of d2 é"
    with pytest.raises(IndexError):
        index.read(2, 4)


def test_bad_lines_are_named_by_file_and_line(tmp_path):
    root = write_beir(tmp_path / "bad", [doc(1), '{"_id": "d2", "text": ', doc(3)])
    with pytest.raises(CollectionError, match=r"corpus.jsonl:2: malformed JSON"):
        CorpusIndex.open(root / "corpus.jsonl")
    root = write_beir(tmp_path / "dup", [doc(1), doc(2), doc(3), doc(2)])
    with pytest.raises(CollectionError, match=r"corpus.jsonl:4: field '_id': duplicate id 'd2', "
                                              r"first seen on line 2"):
        CorpusIndex.open(root / "corpus.jsonl")
    root = write_beir(tmp_path / "unknown", [doc(1)], qrels="q1\td7\t1\n")
    with pytest.raises(CollectionError, match=r"test.tsv:2: .*document 'd7' is not in corpus"):
        load_collection(root, "test", streamed=True)


def test_the_index_is_cached_and_rebuilt_when_the_file_changes(tmp_path):
    root = write_beir(tmp_path / "c", [doc(1), doc(2)])
    first = CorpusIndex.open(root / "corpus.jsonl")
    folders = list((tmp_path / "cache" / "corpus_index").iterdir())
    assert len(folders) == 1 and (folders[0] / "meta.json").is_file()
    again = CorpusIndex.open(root / "corpus.jsonl")
    assert again.sha256 == first.sha256 and again.doc_ids() == ["d1", "d2"]
    path = root / "corpus.jsonl"
    path.write_text(path.read_text() + doc(3) + "\n")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    changed = CorpusIndex.open(path)
    assert changed.doc_ids() == ["d1", "d2", "d3"] and changed.sha256 != first.sha256
