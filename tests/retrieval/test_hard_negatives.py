"""BM25 hard negatives: never a judged document, rank window respected, cached and validated."""
import json
import time
from pathlib import Path

import pytest

from irjax.retrieval import hard_negatives as hn
from irjax.data.collection import Collection, Document, LoadReport, load_collection
from irjax.errors import InputFileError


def toy_collection() -> Collection:
    documents = [Document(f"d{i}", "", text) for i, text in enumerate([
        "apple banana cherry", "apple banana", "apple", "banana cherry", "cherry pie recipe",
        "apple apple apple banana cherry", "unrelated words here", "apple cherry"])]
    queries = {"q1": "apple banana cherry", "q2": "cherry pie", "q3": "never judged"}
    qrels = {"q1": {"d0": 1, "d5": 0}, "q2": {"d4": 2}}
    return Collection("toy", "train", Path("/toy"), documents, queries, qrels, LoadReport({}))


def test_negatives_exclude_every_judged_document_and_follow_bm25_rank():
    collection = toy_collection()
    negatives = hn.mine_hard_negatives(collection, depth=8)
    assert set(negatives) == {"q1", "q2"}  # judged queries only
    assert "d0" not in negatives["q1"] and "d5" not in negatives["q1"]  # grade 1 and grade 0
    assert "d4" not in negatives["q2"]
    assert "d6" not in negatives["q1"]  # shares no term: BM25 never returns it
    from irjax.retrieval.bm25 import BM25Retriever
    bm25 = BM25Retriever()
    bm25.index(collection.doc_ids, [d.contents for d in collection.documents])
    ranking = list(bm25.search(["q1"], ["apple banana cherry"], k=8)["q1"])
    assert negatives["q1"] == [d for d in ranking if d not in ("d0", "d5")]


def test_skip_drops_top_bm25_ranks_and_depth_caps_them():
    collection = toy_collection()
    full = hn.mine_hard_negatives(collection, depth=8)["q1"]
    from irjax.retrieval.bm25 import BM25Retriever
    bm25 = BM25Retriever()
    bm25.index(collection.doc_ids, [d.contents for d in collection.documents])
    ranking = list(bm25.search(["q1"], ["apple banana cherry"], k=8)["q1"])
    windowed = hn.mine_hard_negatives(collection, depth=4, skip=2)["q1"]
    assert windowed == [d for d in ranking[2:4] if d not in ("d0", "d5")]
    assert set(windowed) <= set(full)
    with pytest.raises(ValueError, match="skip must be in"):
        hn.mine_hard_negatives(collection, depth=3, skip=3)


def test_save_load_round_trip_and_cache(tmp_path, monkeypatch):
    collection = toy_collection()
    first = hn.cached_hard_negatives(collection, tmp_path, depth=5)
    files = list(tmp_path.glob("hard_negatives-toy-train-*.jsonl"))
    assert len(files) == 1
    assert [json.loads(line) for line in files[0].read_text().splitlines()] == [
        {"qid": q, "negatives": docs} for q, docs in first.items()]
    monkeypatch.setattr(hn, "mine_hard_negatives", lambda *a, **k: pytest.fail("cache not used"))
    assert hn.cached_hard_negatives(collection, tmp_path, depth=5) == first
    assert hn.cache_key(collection, depth=5) != hn.cache_key(collection, depth=6)
    changed = Collection("toy", "train", Path("/toy"), collection.documents, collection.queries,
                         {"q1": {"d0": 1}, "q2": {"d4": 2}}, LoadReport({}))
    assert hn.cache_key(changed, depth=5) != hn.cache_key(collection, depth=5)  # qrels matter


@pytest.mark.parametrize("lines, message", [
    (['{"qid": "q1", "negatives": ["d1"]}', '{"qid": "q2", "negatives": ["nope"]}'],
     r"negatives\.jsonl:2: negative 'nope' of query 'q2' is not in /toy/corpus\.jsonl"),
    (['{"qid": "q1", "negatives": ["d1", "d5"]}'],
     r"negatives\.jsonl:1: negative 'd5' is judged \(grade 0\) for query 'q1'"),
    (['', '{"qid": "q1", "negatives": ["d1"]', ], r"negatives\.jsonl:2: malformed JSON"),
    (['{"qid": "q1", "negatives": []}', '{"qid": "q1", "negatives": []}'],
     r"negatives\.jsonl:2: query 'q1' repeated \(first on line 1\)"),
    (['{"qid": "q3", "negatives": []}'], r"negatives\.jsonl:1: query 'q3' is not judged in split"),
    (['{"qid": 1, "negatives": []}'], r'negatives\.jsonl:1: "qid" must be a string'),
    (['{"qid": "q1", "negatives": "d1"}'], r'negatives\.jsonl:1: "negatives" of query'),
    (['{"qid": "q1", "negs": []}'], r'negatives\.jsonl:1: expected an object with exactly'),
    (['{"qid": "q1", "negatives": ["d1", "d1"]}'], r"negatives\.jsonl:1: .* more than once"),
])
def test_load_rejects_bad_lines_with_file_and_line(tmp_path, lines, message):
    path = tmp_path / "negatives.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputFileError, match=message):
        hn.load_hard_negatives(path, toy_collection())


def test_load_accepts_partial_files_and_blank_lines(tmp_path):
    path = tmp_path / "negatives.jsonl"
    path.write_text('{"qid": "q1", "negatives": ["d2", "d1"]}\n\n')
    assert hn.load_hard_negatives(path, toy_collection()) == {"q1": ["d2", "d1"]}


def test_scifact_train_mines_all_809_queries_quickly(shared_data, tmp_path):
    collection = load_collection(shared_data / "scifact", "train")
    start = time.perf_counter()
    negatives = hn.cached_hard_negatives(collection, tmp_path, depth=100)
    assert time.perf_counter() - start < 30
    assert list(negatives) == list(collection.qrels)
    assert len(negatives) == 809
    for qid, docs in negatives.items():
        assert not set(docs) & set(collection.qrels[qid])
        assert len(docs) == len(set(docs)) <= 100
    assert sum(map(len, negatives.values())) > 809 * 90  # nearly full lists: judged ones removed
    path = next(tmp_path.glob("*.jsonl"))
    assert hn.load_hard_negatives(path, collection) == negatives


@pytest.mark.parametrize("damage", [
    lambda text: "",  # zero bytes
    lambda text: text[:len(text) // 2],  # truncated mid-line
    lambda text: text.splitlines(keepends=True)[0],  # truncated at a line end: queries missing
    lambda text: "\x00\x01 not json\n",
])
def test_damaged_cache_is_moved_aside_and_mined_again(tmp_path, caplog, damage):
    collection = toy_collection()
    first = hn.cached_hard_negatives(collection, tmp_path, depth=5)
    [path] = tmp_path.glob("hard_negatives-*.jsonl")
    path.write_text(damage(path.read_text()))
    with caplog.at_level("WARNING"):
        again = hn.cached_hard_negatives(collection, tmp_path, depth=5)
    assert again == first
    [corrupt] = tmp_path.glob("hard_negatives-*.jsonl.corrupt-*")
    assert f"{path} is damaged" in caplog.text and corrupt.name in caplog.text
    assert hn.load_hard_negatives(path, collection) == first  # rewritten whole
