"""FDEs must match a per-token loop implementation and approximate Chamfer better as they grow."""
import numpy as np
import pytest

from irjax.index.fde import (FDEConfig, _params, chamfer_similarity, encode_document_fde,
                             encode_document_fdes, encode_query_fde, encode_query_fdes)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _planted_sets(dim: int = 16, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Queries, and per query docs holding noisy copies of a varying number of its tokens, so
    Chamfer similarities spread widely."""
    rng = np.random.default_rng(seed)
    queries = [_unit(rng.standard_normal((8, dim))) for _ in range(4)]
    docs = []
    for q in queries:
        for _ in range(10):
            m = int(rng.integers(0, 9))
            planted = q[:m] + 0.1 * rng.standard_normal((m, dim))
            docs.append(_unit(np.vstack([planted, rng.standard_normal((4, dim))])))
    return queries, docs


def _loop_fde(tokens: np.ndarray, config: FDEConfig, is_query: bool) -> np.ndarray:
    """Token-by-token reference built from the same random parameters."""
    p = _params(config)
    blocks = []
    for r in range(config.num_repetitions):
        codes = [sum(1 << j for j in range(config.num_simhash_projections)
                     if t @ p.hyperplanes[r][:, j] > 0) for t in tokens]
        proj = [t if p.projections is None else t @ p.projections[r] for t in tokens]
        for b in range(config.num_partitions):
            members = [v for v, c in zip(proj, codes) if c == b]
            if members:
                blocks.append(np.sum(members, 0) if is_query else np.mean(members, 0))
            elif is_query or not config.fill_empty_partitions:
                blocks.append(np.zeros(config.block_dim))
            else:
                dist = [bin(c ^ b).count("1") for c in codes]
                blocks.append(proj[int(np.argmin(dist))])
    flat = np.concatenate(blocks) / np.sqrt(config.num_repetitions)
    return flat if p.final is None else flat @ p.final


@pytest.mark.parametrize("proj, final, fill", [(None, None, True), (6, None, True),
                                               (6, 50, True), (None, None, False)])
def test_matches_loop_reference(proj, final, fill):
    config = FDEConfig(dim=8, num_repetitions=3, num_simhash_projections=3, projection_dim=proj,
                       final_dim=final, fill_empty_partitions=fill, seed=7)
    rng = np.random.default_rng(1)
    q, d = rng.standard_normal((5, 8)), rng.standard_normal((3, 8))  # 3 tokens: empties exist
    assert encode_query_fde(q, config).shape == (config.output_dim,)
    np.testing.assert_allclose(encode_query_fde(q, config), _loop_fde(q, config, True), atol=1e-10)
    np.testing.assert_allclose(encode_document_fde(d, config), _loop_fde(d, config, False),
                               atol=1e-10)


def test_single_partition_is_sum_dot_mean():
    """With k=0 there is one partition: <FDE(Q), FDE(D)> = sum_q <q, mean(D)>."""
    config = FDEConfig(dim=6, num_repetitions=4, num_simhash_projections=0, seed=0)
    rng = np.random.default_rng(2)
    q, d = rng.standard_normal((4, 6)), rng.standard_normal((7, 6))
    got = encode_query_fde(q, config) @ encode_document_fde(d, config)
    assert got == pytest.approx(float(q.sum(0) @ d.mean(0)))


def test_deterministic_given_seed_and_seed_matters():
    rng = np.random.default_rng(3)
    tokens = rng.standard_normal((6, 8))
    a = FDEConfig(dim=8, num_repetitions=2, num_simhash_projections=2, projection_dim=4, seed=5)
    b = FDEConfig(dim=8, num_repetitions=2, num_simhash_projections=2, projection_dim=4, seed=5)
    _params.cache_clear()  # fresh parameters must be regenerated identically
    first_q, first_d = encode_query_fde(tokens, a), encode_document_fde(tokens, a)
    _params.cache_clear()
    np.testing.assert_array_equal(first_q, encode_query_fde(tokens, b))
    np.testing.assert_array_equal(first_d, encode_document_fde(tokens, b))
    other = FDEConfig(dim=8, num_repetitions=2, num_simhash_projections=2, projection_dim=4,
                      seed=6)
    assert not np.allclose(first_q, encode_query_fde(tokens, other))


def test_fill_empty_partitions_leaves_no_zero_block():
    config = FDEConfig(dim=8, num_repetitions=3, num_simhash_projections=4, seed=0)
    one_token = np.random.default_rng(4).standard_normal((1, 8))
    blocks = encode_document_fde(one_token, config).reshape(-1, config.block_dim)
    assert np.all(np.abs(blocks).sum(1) > 0)
    # Without filling, a single token occupies exactly one of 16 partitions per repetition.
    off = FDEConfig(dim=8, num_repetitions=3, num_simhash_projections=4,
                    fill_empty_partitions=False, seed=0)
    nonzero = (np.abs(encode_document_fde(one_token, off).reshape(-1, 8)).sum(1) > 0).sum()
    assert nonzero == 3


def test_batched_helpers_match_single():
    config = FDEConfig(dim=4, num_repetitions=2, num_simhash_projections=2, seed=0)
    rng = np.random.default_rng(5)
    sets = [rng.standard_normal((n, 4)) for n in (1, 3, 6)]
    np.testing.assert_array_equal(encode_query_fdes(sets, config)[2],
                                  encode_query_fde(sets[2], config))
    np.testing.assert_array_equal(encode_document_fdes(sets, config)[0],
                                  encode_document_fde(sets[0], config))
    assert np.all(encode_query_fde(np.zeros((0, 4)), config) == 0)


def test_chamfer_matches_definition():
    rng = np.random.default_rng(6)
    q, d = rng.standard_normal((3, 5)), rng.standard_normal((4, 5))
    expected = sum(max(float(qi @ dj) for dj in d) for qi in q)
    assert chamfer_similarity(q, d) == pytest.approx(expected)


def test_approximation_improves_with_dimension():
    queries, docs = _planted_sets()
    chamfer = np.array([[chamfer_similarity(q, d) for d in docs] for q in queries]).ravel()
    settings = [(1, 1, 4), (5, 3, None), (20, 4, None)]
    errors, correlations = [], []
    for reps, k, proj in settings:
        config = FDEConfig(dim=16, num_repetitions=reps, num_simhash_projections=k,
                           projection_dim=proj, seed=1)
        est = (encode_query_fdes(queries, config) @ encode_document_fdes(docs, config).T).ravel()
        errors.append(np.abs(est - chamfer).mean() / np.abs(chamfer).mean())
        correlations.append(np.corrcoef(est, chamfer)[0, 1])
    assert errors[-1] < errors[0]
    assert correlations[0] < correlations[1] < correlations[2]
    assert correlations[-1] > 0.9
    assert correlations[0] < 0.5  # the tiny FDE is genuinely poor, so the test has teeth
