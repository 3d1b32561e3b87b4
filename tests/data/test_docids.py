"""DSI docid schemes: uniqueness on SciFact, semantic tree properties, determinism, persistence."""
import json
from collections import Counter

import numpy as np
import pytest

from irjax.data.collection import load_collection
from irjax.data.docids import (SCHEMES, AtomicDocids, DocidError, DocidScheme, NaiveStringDocids,
                               SemanticDocids, T5_BASE_VOCAB_SIZE, create_docid_scheme,
                               load_docid_scheme)


@pytest.fixture
def scifact_ids(shared_data):
    return load_collection(shared_data / "scifact", "train").doc_ids


def blobs(n_per=60, centres=8, dim=16, seed=0):
    """Well separated Gaussian clusters: points of a blob are much closer than across blobs."""
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=10.0, size=(centres, dim))
    x = np.concatenate([m + rng.normal(size=(n_per, dim)) for m in means])
    return x[rng.permutation(len(x))].astype(np.float32)


def assert_valid(scheme, doc_ids):
    docids = scheme.docids()
    assert len(docids) == len(doc_ids) == len(set(docids))
    assert list(scheme.doc_ids) == list(doc_ids)
    for doc_id, docid in zip(doc_ids, docids):
        assert scheme.docid_tokens(doc_id) == docid and scheme.doc_id_for(docid) == doc_id
        assert all(1 < t < scheme.vocab_size for t in docid)  # never pad (0) or EOS (1)


def test_every_scheme_gives_unique_docids_on_scifact(scifact_ids):
    assert len(scifact_ids) == 5183
    embeddings = np.random.default_rng(0).normal(size=(len(scifact_ids), 16))
    options = {"atomic": {}, "naive_string": {}, "semantic": {"embeddings": embeddings}}
    assert set(options) == set(SCHEMES)
    for name, extra in options.items():
        scheme = create_docid_scheme(name, scifact_ids, **extra)
        assert scheme.name == name
        assert_valid(scheme, scifact_ids)
        assert scheme.stats["max_depth"] == scheme.max_length


def test_atomic_tokens_are_contiguous_from_the_base():
    ids = [f"d{i}" for i in range(50)]
    scheme = AtomicDocids.build(ids, base_vocab_size=100)
    assert [scheme.docid_tokens(d) for d in ids] == [(100 + i,) for i in range(50)]
    assert scheme.num_new_tokens == 50 and scheme.vocab_size == 150
    assert AtomicDocids.build(ids).docid_tokens("d0") == (T5_BASE_VOCAB_SIZE,)


def test_naive_string_uses_sentencepiece_and_refuses_collisions(scifact_ids):
    scheme = NaiveStringDocids.build(["4983", "5836"])
    assert scheme.docid_tokens("4983") == (9526, 4591)  # '▁49', '83' in T5's spiece.model
    assert scheme.num_new_tokens == 0 and scheme.vocab_size == T5_BASE_VOCAB_SIZE
    with pytest.raises(DocidError, match="'a b' and 'a  b' tokenize to the same pieces"):
        NaiveStringDocids.build(["a b", "a  b"])  # SentencePiece collapses whitespace
    with pytest.raises(DocidError, match="needs more than max_length=2"):
        NaiveStringDocids.build(["1234567890123"], max_length=2)


def test_semantic_prefixes_group_similar_documents():
    x = blobs()
    ids = [f"d{i}" for i in range(len(x))]
    scheme = SemanticDocids.build(ids, embeddings=x, num_clusters=8)
    assert_valid(scheme, ids)
    first = np.array([scheme.cluster_path(d)[0] for d in ids])
    dist = np.linalg.norm(x[:, None] - x[None], axis=-1)
    same = first[:, None] == first[None]
    off_diagonal = ~np.eye(len(ids), dtype=bool)
    assert dist[same & off_diagonal].mean() < 0.5 * dist[off_diagonal].mean()


def test_semantic_leaves_and_tokens():
    x = np.random.default_rng(1).normal(size=(700, 8))
    ids = [str(i) for i in range(700)]
    for c, leaf in [(10, None), (5, 5), (4, 7)]:
        scheme = SemanticDocids.build(ids, embeddings=x, num_clusters=c, max_leaf_size=leaf)
        leaf = c if leaf is None else leaf
        paths = [scheme.cluster_path(d) for d in ids]
        leaves = Counter(p[:-1] for p in paths)
        assert max(leaves.values()) <= leaf and all(p[-1] < leaf for p in paths)
        assert all(v < c for p in paths for v in p[:-1])
        assert scheme.num_new_tokens == max(c, leaf)
        assert scheme.stats["max_leaf_size"] <= leaf and scheme.stats["fallback_splits"] == 0
        assert sum(scheme.stats["depth_histogram"].values()) == 700
        prefixes = {p[:k] for p in paths for k in range(1, len(p))}
        assert not prefixes & set(paths)  # prefix-free: no docid is the start of another


def test_semantic_per_level_tokens_are_distinct_per_depth():
    x = np.random.default_rng(2).normal(size=(300, 8))
    ids = [str(i) for i in range(300)]
    shared = SemanticDocids.build(ids, embeddings=x, seed=3)
    per_level = SemanticDocids.build(ids, embeddings=x, seed=3, per_level_tokens=True)
    assert per_level.num_new_tokens == 10 * per_level.max_length
    for d in ids:
        assert shared.cluster_path(d) == per_level.cluster_path(d)
        tokens = per_level.docid_tokens(d)
        assert [(t - T5_BASE_VOCAB_SIZE) // 10 for t in tokens] == list(range(len(tokens)))


def test_semantic_is_deterministic_given_the_seed():
    x = np.random.default_rng(4).normal(size=(400, 8))
    ids = [str(i) for i in range(400)]
    a = SemanticDocids.build(ids, embeddings=x, seed=7).docids()
    assert a == SemanticDocids.build(ids, embeddings=x.copy(), seed=7).docids()
    assert a != SemanticDocids.build(ids, embeddings=x, seed=8).docids()


def test_semantic_degenerate_embeddings_fall_back_to_even_splits():
    ids = [str(i) for i in range(500)]
    duplicates = np.repeat(np.random.default_rng(5).normal(size=(5, 4)), 100, axis=0)
    for x in (np.zeros((500, 4)), duplicates):
        scheme = SemanticDocids.build(ids, embeddings=x)
        assert_valid(scheme, ids)
        assert scheme.stats["fallback_splits"] > 0 and scheme.max_length <= 4
    with pytest.raises(DocidError, match=r"shape \(3, 4\).*\[500, d\]"):
        SemanticDocids.build(ids, embeddings=np.zeros((3, 4)))
    bad = np.zeros((500, 4))
    bad[7, 1] = np.nan
    with pytest.raises(DocidError, match=r"rows \[7\]"):
        SemanticDocids.build(ids, embeddings=bad)


def test_save_load_round_trip_and_mismatched_collection(tmp_path):
    ids = [f"doc-{i}" for i in range(120)]
    x = np.random.default_rng(6).normal(size=(120, 8))
    for scheme in (AtomicDocids.build(ids), NaiveStringDocids.build(ids),
                   SemanticDocids.build(ids, embeddings=x, per_level_tokens=True)):
        path = scheme.save(tmp_path / scheme.name / "docids.json")
        assert not [p for p in path.parent.iterdir() if p.name != "docids.json"]  # no temp file left
        for loaded in (load_docid_scheme(path, ids), type(scheme).load(path),
                       DocidScheme.load(path)):
            assert type(loaded) is type(scheme)
            assert loaded.docids() == scheme.docids() and loaded.doc_ids == scheme.doc_ids
            assert loaded.num_new_tokens == scheme.num_new_tokens
            assert loaded.config == scheme.config and loaded.stats == scheme.stats
        with pytest.raises(DocidError, match="1 documents have no docid"):
            load_docid_scheme(path, ids[:-1] + ["other"])
        with pytest.raises(DocidError, match="different order"):
            load_docid_scheme(path, ids[::-1])
    with pytest.raises(DocidError, match="holds 'atomic' docids, not 'semantic'"):
        SemanticDocids.load(tmp_path / "atomic" / "docids.json")
    broken = json.loads((tmp_path / "atomic" / "docids.json").read_text())
    broken["doc_ids"][0] = "edited"
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(DocidError, match="broken.json: field 'doc_ids' does not match"):
        load_docid_scheme(tmp_path / "broken.json")


def test_bad_inputs_are_refused():
    with pytest.raises(DocidError, match="'a' appears twice"):
        AtomicDocids.build(["a", "b", "a"])
    with pytest.raises(ValueError, match="unknown docid scheme 'nope'"):
        create_docid_scheme("nope", ["a"])
    with pytest.raises(DocidError, match="share docid"):
        AtomicDocids(["a", "b"], [(5,), (5,)], base_vocab_size=10, num_new_tokens=0)
    with pytest.raises(DocidError, match="never be pad"):
        AtomicDocids(["a"], [(1,)], base_vocab_size=10, num_new_tokens=0)
    with pytest.raises(KeyError, match="'zz' has no docid"):
        AtomicDocids.build(["a"]).docid_tokens("zz")


def test_semantic_prefix_balanced_variant_splits_evenly():
    # Clustered data, where plain k-means makes clusters of very different sizes.
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(size=(525, 8)) * 0.1, rng.normal(size=(100, 8)) * 0.1 + 3])
    ids = [str(i) for i in range(len(x))]
    plain = SemanticDocids.build(ids, embeddings=x, num_clusters=5)
    balanced = SemanticDocids.build(ids, embeddings=x, num_clusters=5, balanced=True)
    assert_valid(balanced, ids)
    assert balanced.config["balanced"] and not plain.config["balanced"]
    paths = [balanced.cluster_path(d) for d in ids]
    for depth in range(balanced.max_length - 1):  # every node's children differ by at most one
        children = Counter(p[:depth + 1] for p in paths)
        by_parent: dict = {}
        for prefix, size in children.items():
            by_parent.setdefault(prefix[:-1], []).append(size)
        assert all(max(s) - min(s) <= 1 for s in by_parent.values())
    assert balanced.stats["min_depth"] == balanced.stats["max_depth"] == 4  # 625 -> 125 -> 25 -> 5
    assert plain.stats["min_depth"] < plain.stats["max_depth"]
    assert balanced.docids() == SemanticDocids.build(ids, embeddings=x, num_clusters=5,
                                                     balanced=True).docids()
    # Balanced clusters still group similar documents: the far blob stays together under
    # at most two first tokens.
    assert len({paths[i][0] for i in range(525, 625)}) <= 2
