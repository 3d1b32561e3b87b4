"""Corpus subsets for the scaling study: judged documents kept, seeded fill, nested sizes, query
sampling when N is too small, byte-exact BEIR output that the loader accepts, reuse."""
import json
from pathlib import Path

import pytest

from irjax.data.collection import CollectionError, load_collection
from irjax.data.subcorpus import make_subcorpus, select_subcorpus, write_subcorpus

NUM_DOCS = 40
# train: t0..t5 -> one document each; test: e0..e3, e3 with two relevant documents and one
# judged non-relevant (grade 0) document that is not otherwise needed.
TRAIN = {f"t{i}": {f"d{i}": 1} for i in range(6)}
TEST = {"e0": {"d10": 2}, "e1": {"d11": 1}, "e2": {"d0": 1},
        "e3": {"d12": 1, "d13": 1, "d30": 0}}
JUDGED = {"d0", "d1", "d2", "d3", "d4", "d5", "d10", "d11", "d12", "d13"}


def write_collection(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": f"d{i}", "title": f"title {i}", "text": f"text of document {i}",
                    "metadata": {"n": i}}) + "\n" for i in range(NUM_DOCS)))
    (root / "queries.jsonl").write_text("".join(
        json.dumps({"_id": q, "text": f"query {q}"}) + "\n" for q in [*TRAIN, *TEST, "unjudged"]))
    for split, qrels in (("train", TRAIN), ("test", TEST)):
        (root / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
            f"{q}\t{d}\t{g}\n" for q, docs in qrels.items() for d, g in docs.items()))
    return root


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_collection(tmp_path / "src")


def test_keeps_every_judged_document_and_fills_to_size(source):
    sub = select_subcorpus(source, 20, seed=3)
    assert len(sub.doc_ids) == 20 and JUDGED <= set(sub.doc_ids)
    assert sub.doc_ids == sorted(sub.doc_ids, key=lambda d: int(d[1:]))  # corpus order
    assert sub.qrels["train"] == TRAIN
    assert sub.qrels["test"]["e3"] == ({"d12": 1, "d13": 1, "d30": 0} if "d30" in sub.doc_ids
                                       else {"d12": 1, "d13": 1})
    assert not sub.report["sampled_queries"] and sub.report["note"] == ""
    assert sub.report["fill_documents"] == 10 and sub.report["judged_relevant_documents"] == 10
    assert "unjudged" not in sub.query_ids and len(sub.query_ids) == 10


def test_same_seed_same_subset_and_sizes_are_nested(source):
    assert select_subcorpus(source, 20, seed=1) == select_subcorpus(source, 20, seed=1)
    assert select_subcorpus(source, 20, seed=1).doc_ids != select_subcorpus(source, 20, seed=2).doc_ids
    small, large = (set(select_subcorpus(source, n, seed=1).doc_ids) for n in (15, 30))
    assert small < large


def test_too_small_a_size_samples_queries_and_says_so(source, caplog):
    sub = select_subcorpus(source, 6, seed=0)
    assert len(sub.doc_ids) == 6 and sub.report["sampled_queries"]
    assert "sampled queries" in sub.report["note"] and "10 documents judged relevant" in \
        sub.report["note"]
    assert "sampled queries" in caplog.text
    kept = sub.report["splits"]
    assert kept["train"]["queries_kept"] < 6 and kept["test"]["queries_kept"] < 4
    assert all(sub.qrels.values())  # both splits keep some queries


def test_sampled_queries_stay_answerable(source):
    sub = select_subcorpus(source, 5, seed=7)
    original = {**TRAIN, **TEST}
    for qrels in sub.qrels.values():
        for qid, grades in qrels.items():
            relevant = {d for d, g in original[qid].items() if g > 0}
            assert relevant <= set(sub.doc_ids) and relevant <= set(grades)


def test_written_folder_loads_and_copies_lines_byte_for_byte(source, tmp_path):
    sub = select_subcorpus(source, 12, seed=0)
    out = write_subcorpus(sub, tmp_path / "n12")
    for split in ("train", "test"):
        collection = load_collection(out, split)
        assert collection.doc_ids == sub.doc_ids
        assert collection.qrels == sub.qrels[split]
    source_lines = {json.loads(line)["_id"]: line for line in
                    (source / "corpus.jsonl").read_text().splitlines()}
    for line in (out / "corpus.jsonl").read_text().splitlines():
        assert line == source_lines[json.loads(line)["_id"]]  # metadata kept as written
    info = json.loads((out / "subset.json").read_text())
    assert (info["size"], info["seed"], info["eval_split"]) == (12, 0, "test")
    assert not list(tmp_path.glob(".n12.*"))  # no temporary directory left behind


def test_make_subcorpus_reuses_a_matching_folder_and_rebuilds_another(source, tmp_path):
    out = tmp_path / "sub"
    first = make_subcorpus(source, out, 12, seed=0)
    stamp = (out / "corpus.jsonl").stat().st_mtime_ns
    assert make_subcorpus(source, out, 12, seed=0) == first
    assert (out / "corpus.jsonl").stat().st_mtime_ns == stamp
    other = make_subcorpus(source, out, 14, seed=0)
    assert other["size"] == 14 and len((out / "corpus.jsonl").read_text().splitlines()) == 14


def test_clear_errors(source):
    with pytest.raises(ValueError, match=r"\[1, 40\]"):
        select_subcorpus(source, 41)
    with pytest.raises(ValueError, match=r"\[1, 40\]"):
        select_subcorpus(source, 0)
    with pytest.raises(CollectionError, match="split 'dev' not found"):
        select_subcorpus(source, 10, eval_split="dev")
    (source / "qrels" / "pairs.tsv").write_text("query-id\tcorpus-id\tscore\ne3\td12\t1\n"
                                                 "e3\td13\t1\n")
    with pytest.raises(ValueError, match="keeps no query of split 'pairs'.*needs 2"):
        select_subcorpus(source, 1, eval_split="pairs", train_split=None)


def test_eval_split_only(source):
    sub = select_subcorpus(source, 12, train_split=None)
    assert sub.splits == ["test"] and set(TEST["e0"]) <= set(sub.doc_ids)
