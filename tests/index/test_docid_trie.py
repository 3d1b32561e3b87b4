"""DocidTrie: structure, jax lookups agreeing with the python ones on narrow and wide layouts,
wide (atomic) and deep (string) docids, input errors, and save/load round trips."""
from pathlib import Path

import numpy as np
import pytest

from irjax.index.docid_trie import EOS_ID, PAD_ID, DocidTrie, TrieFormatError


def _random_docids(rng: np.random.Generator, n: int, vocab: int, min_len: int,
                   max_len: int) -> list[tuple[int, ...]]:
    docids: set[tuple[int, ...]] = set()
    while len(docids) < n:
        length = int(rng.integers(min_len, max_len + 1))
        docids.add(tuple(int(t) for t in rng.integers(2, vocab, size=length)))
    return sorted(docids)


def _check_jax_matches_python(trie: DocidTrie) -> None:
    nodes = np.arange(-1, trie.num_nodes)
    mask = np.asarray(trie.allowed_mask(nodes))
    tokens = np.arange(-1, trie.vocab_size + 1)
    nxt = np.asarray(trie.advance(nodes[:, None], tokens[None, :]))
    for i, node in enumerate(nodes):
        expected = [trie.child(int(node), int(t)) for t in tokens]
        assert nxt[i].tolist() == expected
        assert mask[i].tolist() == [c >= 0 for c in expected[1:-1]]


def test_small_trie_structure_lookup_and_decode():
    docids = [(5,), (5, 6), (7, 2, 3)]
    trie = DocidTrie.build(docids, vocab_size=10)
    # root, 5, 5-EOS, 5-6, 5-6-EOS, 7, 7-2, 7-2-3, 7-2-3-EOS
    assert trie.num_nodes == 9 and trie.num_docs == 3 and trie.max_depth == 4
    node5 = trie.lookup([5])
    allowed = np.asarray(trie.allowed_mask(np.array([node5])))[0]
    assert np.flatnonzero(allowed).tolist() == [EOS_ID, 6]
    for i, docid in enumerate(docids):
        assert trie.decode([*docid, EOS_ID]) == i
        assert trie.decode(np.array([*docid, EOS_ID, PAD_ID, PAD_ID])) == i
        assert trie.leaf_doc[trie.lookup([*docid, EOS_ID])] == i
    assert trie.decode([5]) is None                      # no EOS
    assert trie.decode([5, 6, EOS_ID, 6]) is None        # junk after EOS
    assert trie.decode([7, 2, EOS_ID]) is None           # a prefix is not a docid
    assert trie.decode([9, EOS_ID]) is None
    assert trie.lookup([7, 9]) is None and trie.lookup([]) == 0


def test_a_docid_may_be_a_prefix_of_another():
    trie = DocidTrie.build([(3, 4, 5), (3, 4), (3,)], vocab_size=6)
    assert [trie.decode([*d, EOS_ID]) for d in [(3,), (3, 4), (3, 4, 5)]] == [2, 1, 0]


@pytest.mark.parametrize("max_children", [None, 1, 2])
def test_jax_lookups_match_python_on_random_tries(max_children):
    rng = np.random.default_rng(7)
    for _ in range(3):
        vocab = int(rng.integers(4, 12))
        docids = _random_docids(rng, int(rng.integers(1, 15)), vocab, 1, 4)
        trie = DocidTrie.build(docids, vocab, max_children=max_children)
        if max_children == 1 and len(docids) > 1:
            assert trie.num_wide > 0
        _check_jax_matches_python(trie)
        for i, docid in enumerate(docids):
            assert trie.decode([*docid, EOS_ID]) == i


def test_wide_atomic_docids_stay_small():
    n = 5000
    trie = DocidTrie.build([(2 + i,) for i in range(n)], vocab_size=n + 100)
    assert trie.num_wide == 1 and trie.max_children == 1     # only the root is wide
    assert trie.nbytes < 1 << 20                               # dense would be ~400 MB
    mask = np.asarray(trie.allowed_mask(np.array([0, -1])))
    assert mask[0].sum() == n and not mask[0, :2].any() and not mask[1].any()
    nodes = np.asarray(trie.advance(np.zeros(3, np.int32), np.array([2, n + 1, n + 2])))
    assert nodes[0] > 0 and nodes[1] > 0 and nodes[2] == -1
    assert trie.decode([4000, EOS_ID]) == 3998


def test_deep_string_docids():
    rng = np.random.default_rng(3)
    docids = _random_docids(rng, 300, 50, 6, 10)
    trie = DocidTrie.build(docids, vocab_size=50)
    assert trie.max_depth == 11
    assert all(trie.decode([*d, EOS_ID]) == i for i, d in enumerate(docids))
    # Walk every docid in jax, one step at a time, for all docids at once.
    seqs = np.zeros((len(docids), 11), np.int32)
    for i, d in enumerate(docids):
        seqs[i, :len(d) + 1] = [*d, EOS_ID]
    nodes = np.zeros(len(docids), np.int32)
    for step in range(11):
        active = nodes >= 0
        allowed = np.asarray(trie.allowed_mask(nodes))
        assert allowed[np.arange(len(docids))[active & (seqs[:, step] > 0)],
                       seqs[active & (seqs[:, step] > 0), step]].all()
        nodes = np.where(seqs[:, step] > 0, np.asarray(trie.advance(nodes, seqs[:, step])), nodes)
    assert np.asarray(trie.leaf_doc)[nodes].tolist() == list(range(len(docids)))


@pytest.mark.parametrize("docids, vocab, error, match", [
    ([(2, 3), (4,), (2, 3)], 10, ValueError, "unique"),
    ([(2,), ()], 10, ValueError, "empty"),
    ([(2, 0)], 10, ValueError, "reserved"),
    ([(EOS_ID,)], 10, ValueError, "reserved"),
    ([(2, 10)], 10, ValueError, "below vocab_size"),
    ([(-3,)], 10, ValueError, "outside"),
    (["23"], 10, TypeError, "tokenize"),
    ([(2.0, 3.0)], 10, TypeError, "int token ids"),
    ([(True, 3)], 10, TypeError, "int token ids"),
    ([], 10, ValueError, "zero docids"),
    ([(2,)], 2, ValueError, "vocab_size"),
])
def test_build_errors(docids, vocab, error, match):
    with pytest.raises(error, match=match):
        DocidTrie.build(docids, vocab)


def test_save_load_round_trip(tmp_path: Path):
    rng = np.random.default_rng(1)
    docids = _random_docids(rng, 40, 30, 1, 5)
    trie = DocidTrie.build(docids, 30, max_children=3)
    path = tmp_path / "sub" / "trie.npz"
    trie.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["trie.npz"]  # no temporary left behind
    loaded = DocidTrie.load(path, expected_vocab_size=30)
    for name in ("children_tokens", "children_next", "wide_row", "wide_next", "leaf_doc"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(trie, name))
    assert loaded.max_depth == trie.max_depth and loaded.num_wide == trie.num_wide
    assert all(loaded.decode([*d, EOS_ID]) == i for i, d in enumerate(docids))
    trie.save(path)  # overwriting works
    with pytest.raises(TrieFormatError, match="vocab size 30"):
        DocidTrie.load(path, expected_vocab_size=31)


def test_load_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        DocidTrie.load(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(TrieFormatError, match="not a readable"):
        DocidTrie.load(junk)
    trie = DocidTrie.build([(2, 3), (4,)], 6)
    path = tmp_path / "trie.npz"
    trie.save(path)
    path.write_bytes(path.read_bytes()[:-30])  # truncated
    with pytest.raises(TrieFormatError):
        DocidTrie.load(path)
    arrays = {name: getattr(trie, name) for name in
              ("children_tokens", "children_next", "wide_row", "wide_next", "leaf_doc")}
    np.savez(tmp_path / "partial.npz", **{k: v for k, v in arrays.items() if k != "leaf_doc"})
    with pytest.raises(TrieFormatError, match="lacks"):
        DocidTrie.load(tmp_path / "partial.npz")
    bad = dict(arrays, children_next=np.where(arrays["children_next"] > 0, 99,
                                              arrays["children_next"]))
    np.savez(tmp_path / "bad.npz", format_version=1, max_depth=3, **bad)
    with pytest.raises(TrieFormatError, match="inconsistent"):
        DocidTrie.load(tmp_path / "bad.npz")
    np.savez(tmp_path / "future.npz", format_version=99, max_depth=3, **arrays)
    with pytest.raises(TrieFormatError, match="format 99"):
        DocidTrie.load(tmp_path / "future.npz")
