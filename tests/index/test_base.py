"""Shared Index behaviour: input validation, k clamping, SearchResult, and the registry."""
import numpy as np
import pytest

from irjax.index.base import (Index, SearchResult, available_kinds, create_index, ids_checksum,
                              index_class)

KINDS = ["exact", "scann", "faiss"]


def _vectors(n: int = 40, d: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def _ids(n: int = 40) -> list[str]:
    return [f"d{i}" for i in range(n)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "vectors, ids, error, message",
    [
        (_vectors()[0], _ids(1), ValueError, "2-D array"),
        (_vectors()[None], _ids(1), ValueError, "2-D array"),
        (_vectors().astype(str), _ids(), TypeError, "real numbers"),
        (np.array([[1, 2], [3, "x"]], dtype=object), _ids(2), TypeError, "real numbers"),
        (_vectors()[:0], [], ValueError, "zero vectors"),
        (_vectors(), _ids(39), ValueError, "39 ids for 40 vectors"),
        (_vectors(), _ids(39) + ["d3"], ValueError, "unique; duplicated: \\['d3'\\]"),
        (_vectors(), list(range(40)), TypeError, "ids must be strings"),
        (_vectors(), "d" * 40, TypeError, "not a single string|sequence of strings"),
        (np.where(np.arange(40)[:, None] == 7, np.nan, _vectors()), _ids(), ValueError,
         "NaN or infinite values in 1 row\\(s\\) \\(first rows: \\[7\\]"),
        (np.full((40, 8), np.inf), _ids(), ValueError, "NaN or infinite"),
        (np.zeros((40, 0)), _ids(), ValueError, "dimension 0"),
    ],
)
def test_bad_build_input_is_rejected(kind, vectors, ids, error, message):
    index = create_index(kind)
    with pytest.raises(error, match=message):
        index.build(vectors, ids)
    assert not index.is_built and len(index) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_numeric_input_is_coerced_to_float32(kind):
    vectors = np.random.default_rng(1).integers(-5, 6, size=(40, 8))
    queries = vectors[:3].astype(np.float64) + 0.25
    as_int = create_index(kind).build(vectors, _ids()).search(queries, 5)
    as_f32 = create_index(kind).build(vectors.astype(np.float32), _ids()).search(
        queries.astype(np.float32), 5)
    assert as_int.scores.dtype == np.float32
    np.testing.assert_array_equal(as_int.indices, as_f32.indices)
    np.testing.assert_allclose(as_int.scores, as_f32.scores, rtol=1e-6)
    # the list-of-lists and tuple forms work too
    from_lists = create_index(kind).build(vectors.tolist(), tuple(_ids())).search(queries, 5)
    np.testing.assert_array_equal(from_lists.indices, as_f32.indices)


@pytest.mark.parametrize("kind", KINDS)
def test_search_validates_queries_and_clamps_k(kind):
    index = create_index(kind).build(_vectors(), _ids())
    assert len(index) == 40 and index.dim == 8
    result = index.search(_vectors(3, seed=5), 1000)
    assert result.scores.shape == result.indices.shape == (3, 40)
    assert all(sorted(row) == sorted(_ids()) for row in result.ids)
    assert index.search(np.zeros((0, 8), np.float32), 5).scores.shape == (0, 5)
    with pytest.raises(ValueError, match="dimension 9 but the index holds 8-dimensional"):
        index.search(_vectors(2, d=9), 5)
    for bad_k in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            index.search(_vectors(2), bad_k)
    with pytest.raises(ValueError, match="2-D array"):
        index.search(_vectors(2)[0], 5)


def test_unbuilt_index_refuses_to_search_or_save(tmp_path):
    index = create_index("exact")
    with pytest.raises(RuntimeError, match="call build\\(\\) or load\\(\\) first"):
        index.search(_vectors(2), 3)
    with pytest.raises(RuntimeError, match="empty"):
        index.save(tmp_path / "ix")
    assert not (tmp_path / "ix").exists()


def test_cosine_rejects_zero_vectors_and_unknown_metric_is_rejected():
    vectors = _vectors()
    vectors[4] = 0
    with pytest.raises(ValueError, match="all-zero rows \\[4\\]"):
        create_index("exact", metric="cosine").build(vectors, _ids())
    with pytest.raises(ValueError, match="unknown metric 'l2'.*'dot', 'cosine'"):
        create_index("exact", metric="l2")


def test_search_result_to_run():
    result = SearchResult(scores=np.array([[0.9, 0.5], [0.7, 0.1]], np.float32),
                          indices=np.array([[2, 0], [1, 2]]), ids=[["c", "a"], ["b", "c"]])
    run = result.to_run(["q1", "q2"])
    assert run == {"q1": {"c": pytest.approx(0.9), "a": pytest.approx(0.5)},
                   "q2": {"b": pytest.approx(0.7), "c": pytest.approx(0.1)}}
    assert all(type(s) is float for docs in run.values() for s in docs.values())
    with pytest.raises(ValueError, match="got 1 query ids for 2 result rows"):
        result.to_run(["q1"])
    with pytest.raises(ValueError, match="unique.*'q1'"):
        result.to_run(["q1", "q1"])
    with pytest.raises(ValueError, match="same shape"):
        SearchResult(np.zeros((2, 2), np.float32), np.zeros((2, 3), np.int64), [[], []])


def test_registry_creates_each_kind_and_lists_kinds_on_error():
    assert set(KINDS) <= set(available_kinds())
    for kind in KINDS:
        index = create_index(kind)
        assert isinstance(index, Index) and index.kind == kind
        assert index_class(kind) is type(index)
    with pytest.raises(ValueError, match="unknown index kind 'annoy'.*'exact'.*'faiss'.*'scann'"):
        create_index("annoy")
    with pytest.raises(TypeError, match="accepted options.*corpus_chunk_size"):
        create_index("exact", num_leaves=10)
    assert create_index("scann", num_leaves=10).num_leaves == 10


def test_ids_checksum_depends_on_content_and_order():
    assert ids_checksum(["a", "b"]) == ids_checksum(("a", "b"))
    assert ids_checksum(["a", "b"]) != ids_checksum(["b", "a"])
    assert ids_checksum(["a,b"]) != ids_checksum(["a", "b"])
