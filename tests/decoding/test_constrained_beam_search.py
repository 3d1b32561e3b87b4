"""Trie-constrained beam search: never an invalid docid, exhaustive when the beam covers every
docid, correct competition between docids of different lengths, empty beam slots, batching."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from irjax.decoding import constrained_beam_search, rank_docids
from irjax.index.docid_trie import EOS_ID, PAD_ID, DocidTrie
from tests.decoding.toy_models import (bigram_model, brute_force_scores, linear_context,
                                       linear_model)


def _random_docids(rng, n, vocab, max_len):
    docids = {tuple(int(t) for t in rng.integers(2, vocab, size=int(rng.integers(1, max_len + 1))))
              for _ in range(n)}
    return sorted(docids)


def _query_context(context, b):
    embed, queries, out = context
    return embed, queries[b:b + 1], out


def _check_results(trie, docids, seqs, scores, docs, expected_scores):
    """Every slot is a valid docid with its exact score, or an empty slot; rows sorted."""
    seqs, scores, docs = np.asarray(seqs), np.asarray(scores), np.asarray(docs)
    for b in range(docs.shape[0]):
        finite = scores[b][np.isfinite(scores[b])]
        assert np.all(np.diff(finite) <= 1e-6) and np.isneginf(scores[b][finite.size:]).all()
        for k in range(docs.shape[1]):
            doc = int(docs[b, k])
            if doc < 0:
                assert scores[b, k] == -np.inf and not seqs[b, k].any()
                continue
            assert trie.decode(seqs[b, k]) == doc
            docid = docids[doc]
            assert seqs[b, k, :len(docid) + 1].tolist() == [*docid, EOS_ID]
            assert not seqs[b, k, len(docid) + 1:].any()
            assert scores[b, k] == pytest.approx(expected_scores[b][doc], abs=1e-4)
        valid = docs[b][docs[b] >= 0]
        assert len(set(valid.tolist())) == valid.size


def _bucketed(trie: DocidTrie, nodes: int = 192, width: int = 24, wide: int = 32,
              depth: int = 6) -> DocidTrie:
    """The same trie with unreachable padding nodes, -1 columns, spare wide rows and extra steps,
    so that random tries share a few array shapes (and compiled searches) instead of compiling
    one search each. Padding must never change results, which the property test checks too."""
    n, w, nw, vocab = trie.num_nodes, trie.max_children, trie.num_wide, trie.vocab_size
    width, wide = max(width, w), max(wide, nw)
    nodes = max(nodes, n + wide - nw)         # padding nodes own the spare wide rows
    tokens, nxt = np.full((2, nodes, width), -1, np.int32)
    tokens[:n, :w], nxt[:n, :w] = trie.children_tokens, trie.children_next
    wide_row = np.full(nodes, -1, np.int32)
    wide_row[:n] = trie.wide_row
    wide_row[n:n + wide - nw] = np.arange(nw, wide)
    wide_next = np.full((wide, vocab), -1, np.int32)
    wide_next[:nw] = trie.wide_next
    leaf_doc = np.full(nodes, -1, np.int32)
    leaf_doc[:n] = trie.leaf_doc
    return DocidTrie(tokens, nxt, wide_row, wide_next, leaf_doc, max(depth, trie.max_depth))


def test_property_never_returns_an_invalid_docid():
    """30 random tries (widths, depths, vocabularies, dense and wide layouts), random models."""
    for seed in range(30):
        rng = np.random.default_rng(seed)
        vocab = [8, 20][seed % 2]
        docids = _random_docids(rng, int(rng.integers(1, 25)), vocab, int(rng.integers(1, 6)))
        trie = DocidTrie.build(docids, vocab, max_children=[None, 1, 2][seed % 3])
        trie = _bucketed(trie)
        batch, beam = 2, [3, 8][(seed // 2) % 2]
        context = linear_context(vocab, batch, seed)
        seqs, scores, docs = constrained_beam_search(linear_model, trie, batch, beam,
                                                     context=context)
        assert seqs.shape == (batch, beam, trie.max_depth)
        expected = [brute_force_scores(linear_model, docids, trie.max_depth,
                                       _query_context(context, b)) for b in range(batch)]
        _check_results(trie, docids, seqs, scores, docs, expected)
        found = np.asarray(docs) >= 0
        assert (found.sum(axis=1) == min(beam, len(docids))).all(), seed
        if beam >= len(docids):  # exhaustive: exactly the brute-force ranking
            for b in range(batch):
                np.testing.assert_allclose(np.asarray(scores)[b, :len(docids)],
                                           np.sort(expected[b])[::-1], atol=1e-4)


def test_beam_search_equals_exhaustive_enumeration_with_variable_lengths():
    """A bigram model where the greedy first token leads to a worse docid than a short one."""
    docids = [(2,), (3, 4), (3, 5, 6), (4, 2, 2, 2), (3,)]
    vocab, length = 8, 5
    table = np.random.default_rng(0).normal(size=(length, vocab, vocab)).astype(np.float32)
    table[0, PAD_ID, 3] = 4.0       # step 0 strongly prefers token 3 ...
    table[1, 3, EOS_ID] = -4.0      # ... but stopping after it is unlikely
    table[0, PAD_ID, 2] = 3.0       # token 2 comes second ...
    table[1, 2, EOS_ID] = 4.0       # ... and (2,) then EOS is likely
    context = jnp.asarray(table)
    trie = DocidTrie.build(docids, vocab)
    expected = brute_force_scores(bigram_model, docids, length, context)
    seqs, scores, docs = constrained_beam_search(bigram_model, trie, 1, len(docids) + 2,
                                                 context=context)
    _check_results(trie, docids, seqs, scores, docs, [expected])
    assert np.asarray(docs)[0].tolist() == [*np.argsort(-expected).tolist(), -1, -1]
    # Greedy (beam 1) is trapped by the likely first token; a wider beam recovers (2,).
    best = int(np.argmax(expected))
    assert docids[best] == (2,)
    assert int(np.asarray(constrained_beam_search(bigram_model, trie, 1, 1,
                                                  context=context)[2])[0, 0]) != best
    assert int(np.asarray(constrained_beam_search(bigram_model, trie, 1, 2,
                                                  context=context)[2])[0, 0]) == best


def _uniform(ids, step):
    return jnp.zeros((ids.shape[0], 8), jnp.float32)


def test_ties_and_lengths_under_a_uniform_model():
    docids = [(5, 6, 7), (2, 4), (2,), (3,)]
    trie = DocidTrie.build(docids, 8)
    _, scores, docs = constrained_beam_search(_uniform, trie, 1, 4)
    docs, scores = np.asarray(docs)[0], np.asarray(scores)[0]
    assert set(docs[:2].tolist()) == {2, 3} and docs[2:].tolist() == [1, 0]
    np.testing.assert_allclose(scores, -np.log(8) * np.array([2, 2, 3, 4]), rtol=1e-6)
    # Beam 1 under a tie still returns one of the tied best docids, with the right score.
    _, scores, docs = constrained_beam_search(_uniform, trie, 1, 1)
    assert int(docs[0, 0]) in (2, 3) and float(scores[0, 0]) == pytest.approx(-2 * np.log(8))


def test_fewer_docids_than_beams_leaves_empty_slots():
    docids = [(2, 3), (4,), (2, 5)]
    trie = DocidTrie.build(docids, 8)
    seqs, scores, docs = constrained_beam_search(_uniform, trie, 2, 5, max_length=6)
    assert seqs.shape == (2, 5, 6)
    assert (np.asarray(docs)[:, 3:] == -1).all() and np.isneginf(np.asarray(scores)[:, 3:]).all()
    assert not np.asarray(seqs)[:, 3:].any()
    assert [sorted(d for d, _ in r) for r in rank_docids(_uniform, trie, 2, 5)] == [[0, 1, 2]] * 2


def test_batch_of_queries_gets_their_own_rankings():
    rng = np.random.default_rng(5)
    vocab = 12
    docids = _random_docids(rng, 15, vocab, 3)
    trie = DocidTrie.build(docids, vocab)
    context = linear_context(vocab, 4, seed=11)
    rankings = rank_docids(linear_model, trie, 4, len(docids), context=context)
    orders = []
    for b, ranking in enumerate(rankings):
        expected = brute_force_scores(linear_model, docids, trie.max_depth,
                                      _query_context(context, b))
        assert [d for d, _ in ranking] == np.argsort(-expected, kind="stable").tolist()
        assert [s for _, s in ranking] == pytest.approx(np.sort(expected)[::-1].tolist(), abs=1e-4)
        orders.append(tuple(d for d, _ in ranking[:3]))
    assert len(set(orders)) > 1


def test_wide_root_of_atomic_docids():
    vocab, n = 400, 300
    docids = [(2 + i,) for i in range(n)]
    trie = DocidTrie.build(docids, vocab)
    assert trie.num_wide == 1
    context = linear_context(vocab, 2, seed=2)
    seqs, scores, docs = constrained_beam_search(linear_model, trie, 2, 6, context=context)
    expected = [brute_force_scores(linear_model, docids, 2, _query_context(context, b))
                for b in range(2)]
    _check_results(trie, docids, seqs, scores, docs, expected)
    assert (np.asarray(docs) >= 0).all()


def test_argument_errors():
    trie = DocidTrie.build([(2, 3), (4,)], 8)
    with pytest.raises(ValueError, match="max_length=2 is shorter"):
        constrained_beam_search(_uniform, trie, 1, 2, max_length=2)
    with pytest.raises(ValueError, match="beam_size"):
        constrained_beam_search(_uniform, trie, 1, 0)
    with pytest.raises(TypeError, match="DocidTrie"):
        constrained_beam_search(_uniform, {"not": "a trie"}, 1, 2)
    with pytest.raises(ValueError, match=r"expected \[2, 8\]"):
        constrained_beam_search(lambda ids, step: jnp.zeros((ids.shape[0], 9)), trie, 1, 2)


def test_scores_are_log_probabilities():
    """Renormalising over the allowed tokens would give 0 here; full-vocab softmax does not."""
    trie = DocidTrie.build([(2,)], 8)
    _, scores, _ = constrained_beam_search(_uniform, trie, 1, 1)
    assert float(scores[0, 0]) == pytest.approx(2 * -math.log(8))
