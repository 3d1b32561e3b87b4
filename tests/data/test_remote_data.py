"""Collections, streamed corpora, dataset names and TREC files read from a remote folder
(memory:// standing in for gs://) give exactly what the same files give on local disk."""
from __future__ import annotations

import json

import pytest

from irjax.data import corpus_index
from irjax.data.collection import CollectionError, load_collection
from irjax.data.corpus_index import CorpusIndex
from irjax.data.resolve import DatasetNotFoundError, resolve_dataset
from irjax.data.runs import read_trec_qrels, read_trec_run, write_trec_run
from irjax.files import atomic_write_text
from irjax.paths import as_path, is_remote
from tests.helpers.corpus import write_corpus
from tests.helpers.memory_fs import upload


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IRJAX_CACHE_DIR", str(tmp_path / "cache"))


def test_remote_collection_equals_the_local_one(tmp_path, memory_bucket):
    local = write_corpus(tmp_path / "c", 12)
    remote = upload(local, f"{memory_bucket}/c")
    expected = load_collection(local, "test")
    for streamed in (False, True):
        collection = load_collection(remote, "test", streamed=streamed)
        assert is_remote(collection.path) and str(collection.path) == remote
        assert list(collection.documents) == expected.documents
        assert list(collection.doc_ids) == expected.doc_ids
        assert (collection.queries, collection.qrels) == (expected.queries, expected.qrels)
        assert collection.fingerprint() == expected.fingerprint()
        assert collection.corpus_rows == expected.corpus_rows
        assert collection.report.counts == expected.report.counts
    assert load_collection(remote, "test", streamed=True).documents[5:7] == expected.documents[5:7]
    with pytest.raises(CollectionError, match=rf"{remote}/qrels/dev.tsv: split 'dev' not found; "
                                              r"available splits: \['test'\]"):
        load_collection(remote, "dev")


def test_remote_corpus_index_is_cached_and_rebuilt_when_the_file_changes(memory_bucket,
                                                                         monkeypatch):
    built = []
    real_build = CorpusIndex.build.__func__
    monkeypatch.setattr(CorpusIndex, "build",
                        classmethod(lambda cls, path: built.append(path) or real_build(cls, path)))
    monkeypatch.setattr(corpus_index, "_EDGE", 64)  # so a change in the middle is invisible
    path = as_path(f"{memory_bucket}/corpus.jsonl")
    lines = [json.dumps({"_id": f"d{i}", "text": f"document number {i:03d}"}) for i in range(20)]
    atomic_write_text(path, "\n".join(lines) + "\n")
    first = CorpusIndex.open(path)
    again = CorpusIndex.open(str(path))
    assert len(built) == 1 and again.sha256 == first.sha256 and again.doc_ids() == first.doc_ids()
    # Same size, same first and last 64 bytes, no modification time on this store: the one
    # rewrite the stamp cannot see (documented); the cache is then reused as is.
    atomic_write_text(path, "\n".join(lines).replace("number 010", "number 999") + "\n")
    CorpusIndex.open(path)
    assert len(built) == 1
    atomic_write_text(path, "\n".join(lines[:-1]) + "\n")  # another size: indexed again
    assert len(CorpusIndex.open(path)) == 19 and len(built) == 2
    atomic_write_text(path, "\n".join(lines).replace("number 019", "number 111") + "\n")
    assert CorpusIndex.open(path).read(19, 20)[0].text == "document number 111"  # last bytes
    assert len(built) == 3


def test_dataset_uris_are_taken_as_they_are(tmp_path, memory_bucket, monkeypatch):
    remote = upload(write_corpus(tmp_path / "c", 3), f"{memory_bucket}/data/tiny")
    assert str(resolve_dataset(remote)) == remote
    assert str(resolve_dataset("tiny", data_dir=f"{memory_bucket}/data")) == remote
    monkeypatch.setenv("IRJAX_DATA_DIR", f"{memory_bucket}/data")
    assert str(resolve_dataset("tiny")) == remote
    with pytest.raises(DatasetNotFoundError, match=rf"dataset folder {memory_bucket}/nothing "
                                                   "does not exist"):
        resolve_dataset(f"{memory_bucket}/nothing")
    (as_path(remote) / "queries.jsonl").unlink()
    with pytest.raises(DatasetNotFoundError, match="missing queries.jsonl"):
        resolve_dataset(remote)


def test_trec_files_round_trip_through_a_remote_folder(memory_bucket):
    run = {"q1": {"d1": 2.5, "d2": 1.0}, "q2": {"d3": 0.25}}
    path = write_trec_run(run, f"{memory_bucket}/w/run.trec", tag="t")
    assert is_remote(path) and read_trec_run(path) == run
    atomic_write_text(f"{memory_bucket}/w/qrels.txt", "q1 0 d1 1\nq2 0 d3 2\n")
    assert read_trec_qrels(f"{memory_bucket}/w/qrels.txt") == {"q1": {"d1": 1}, "q2": {"d3": 2}}
