"""Sparse indexes: the CSR scorer against brute-force numpy, Seismic at its exhaustive settings
against the CSR scorer, save/load/verify round trips, bytes_per_doc, and SPLADE end to end (sparse
scores = dense dot products of its vocabulary vectors)."""
from __future__ import annotations

import jax
import numpy as np
import pytest
import scipy.sparse as sp

from irjax.index.base import IndexIntegrityError, ids_checksum
from irjax.index.seismic_index import SeismicSparseIndex
from irjax.index.sparse import ExactSparseIndex, sparse_index_class

VOCAB = 300


def _matrix(rows: int, density: float, seed: int) -> sp.csr_matrix:
    m = sp.random(rows, VOCAB, density=density, random_state=seed, format="csr", dtype=np.float32)
    m.data = np.round(m.data * 4, 2) + 0.01  # positive, with some repeated weights
    return m


DOCS = _matrix(400, 0.04, 0)
QUERIES = _matrix(160, 0.03, 1)  # enough for seismic's threads to answer out of order
IDS = [f"d{i}" for i in range(DOCS.shape[0])]


def _brute_force(k: int) -> list[list[tuple[int, float]]]:
    scores = (QUERIES.toarray() @ DOCS.toarray().T)
    out = []
    for row in scores:
        order = sorted((i for i in range(len(row)) if row[i] > 0), key=lambda i: (-row[i], i))[:k]
        out.append([(i, float(row[i])) for i in order])
    return out


def test_exact_matches_brute_force_and_drops_non_matches():
    result = ExactSparseIndex(query_block=7).build(DOCS, IDS).search(QUERIES, 10)
    for got_i, got_s, want in zip(result.indices, result.scores, _brute_force(10)):
        assert got_i.tolist() == [i for i, _ in want]
        np.testing.assert_allclose(got_s, [s for _, s in want], rtol=1e-5)
    assert result.ids[0] == [IDS[i] for i in result.indices[0]]


def test_seismic_at_exhaustive_settings_returns_the_exact_top_k():
    k = 10
    exact = ExactSparseIndex().build(DOCS, IDS).search(QUERIES, k)
    seismic = SeismicSparseIndex.exhaustive(DOCS.shape[0], VOCAB, centroid_fraction=0.2)
    got = seismic.build(DOCS, IDS).search(QUERIES, k)
    for e_i, e_s, g_i, g_s in zip(exact.indices, exact.scores, got.indices, got.scores):
        # weights are stored as float16: compare scores loosely, and the top-k as the exact
        # ranking's set up to a tie band of that precision at the cut-off
        np.testing.assert_allclose(g_s, e_s, rtol=2e-3, atol=2e-3)
        assert len(g_i) == len(e_i)
        if len(e_i) == k:
            sure = set(e_i[e_s > e_s[-1] + 5e-3].tolist())
            assert sure <= set(g_i.tolist())
        else:
            assert set(g_i.tolist()) == set(e_i.tolist())


def test_seismic_pruning_knobs_change_results_then_exhaustive_does_not():
    pruned = SeismicSparseIndex(n_postings=5, max_fraction=1.0, summary_energy=0.2, query_cut=1,
                                heap_factor=0.5).build(DOCS, IDS).search(QUERIES, 10)
    exact = ExactSparseIndex().build(DOCS, IDS).search(QUERIES, 10)
    overlap = np.mean([len(set(a) & set(b)) / max(len(b), 1)
                       for a, b in zip(pruned.ids, exact.ids)])
    assert overlap < 0.9  # the knobs do prune (so the exhaustive test above is not vacuous)


@pytest.mark.parametrize("kind", ["exact", "seismic"])
def test_save_load_round_trip_and_corruption(tmp_path, kind):
    cls = sparse_index_class(kind)
    index = cls().build(DOCS, IDS)
    before = index.search(QUERIES, 5)
    index.save(tmp_path / "ix")
    loaded = cls.load(tmp_path / "ix", expected_ids_checksum=ids_checksum(IDS))
    after = loaded.search(QUERIES, 5)
    assert after.ids == before.ids
    for a, b in zip(after.scores, before.scores):
        np.testing.assert_array_equal(a, b)
    assert loaded.options() == index.options()
    assert loaded.bytes_per_doc == pytest.approx(DOCS.nnz / DOCS.shape[0] * cls.bytes_per_posting)
    with pytest.raises(IndexIntegrityError, match="other documents"):
        cls.load(tmp_path / "ix", expected_ids_checksum=ids_checksum(IDS[::-1]))
    data = next(p for p in (tmp_path / "ix").iterdir() if p.name not in ("manifest.json", "ids.json"))
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(IndexIntegrityError, match="sha256|bytes"):
        cls.verify(tmp_path / "ix")


def test_bad_input_is_named():
    index = ExactSparseIndex().build(DOCS, IDS)
    with pytest.raises(ValueError, match="columns"):
        index.search(sp.csr_matrix((1, VOCAB + 1), dtype=np.float32), 3)
    with pytest.raises(ValueError, match="negative"):
        ExactSparseIndex().build(-DOCS, IDS)
    with pytest.raises(ValueError, match="unknown sparse index"):
        sparse_index_class("lucene")


def test_splade_sparse_scores_equal_dense_dot_products():
    from irjax.models.bert import BertConfig
    from irjax.models.splade import SpladeEncoder
    from irjax.retrieval.sparse import SpladeTextEncoder
    import flax.linen as nn

    config = BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=40)

    class Tokens:  # a deterministic stand-in tokenizer over ids 3..29
        pad_id, vocab_size = 0, 30

        def tokenize(self, texts, max_length):
            return [np.array([1] + [3 + (ord(c) % 27) for c in t][: max_length - 2] + [2], np.int32)
                    for t in texts]

    module = SpladeEncoder(config)
    params = nn.meta.unbox(module.init(jax.random.key(3), np.ones((1, 4), np.int32),
                                       np.ones((1, 4), np.int32))["params"])
    docs = ["sparse retrieval", "inverted index", "a much longer document about learned terms", "x"]
    queries = ["index", "learned sparse"]
    encoder = SpladeTextEncoder(module, params, Tokens(), max_length=32, batch_size=2)
    d, q = encoder.encode(docs), encoder.encode(queries)

    def dense(texts):
        tok = Tokens().tokenize(texts, 32)
        width = max(len(t) for t in tok)
        ids = np.array([np.pad(t, (0, width - len(t))) for t in tok])
        return np.asarray(module.apply({"params": params}, ids, (ids > 0).astype(np.int32)))

    np.testing.assert_allclose(d.toarray(), dense(docs), rtol=1e-5, atol=1e-6)
    result = ExactSparseIndex().build(d, [str(i) for i in range(len(docs))]).search(q, len(docs))
    full = dense(queries) @ dense(docs).T
    for row, idx, scores in zip(full, result.indices, result.scores):
        np.testing.assert_allclose(scores, row[idx], rtol=1e-5)
        assert idx.tolist() == sorted(np.flatnonzero(row > 0), key=lambda i: (-row[i], i))


def test_seismic_answers_are_keyed_by_query_id_whatever_their_order():
    """batch_search returns its per-query lists in thread-completion order (seen on NFCorpus);
    answering them reversed must not change which query gets which documents."""
    index = SeismicSparseIndex.exhaustive(DOCS.shape[0], VOCAB).build(DOCS, IDS)
    expected = index.search(QUERIES, 5)

    class Reversed:
        def __init__(self, inner):
            self.inner = inner

        def batch_search(self, *args, **kwargs):
            return self.inner.batch_search(*args, **kwargs)[::-1]

    index._index = Reversed(index._index)
    assert index.search(QUERIES, 5).ids == expected.ids
