"""A prefix trie over docid token sequences, laid out as arrays so that constrained decoding for
generative retrieval (DSI) can run inside `jax.jit`.

A docid is a tuple of decoder-vocabulary token ids without EOS; a valid generated sequence is a
docid's tokens followed by EOS. The trie's terminal edges are therefore EOS edges into leaf
nodes, one leaf per docid, so a docid may be a prefix of another: (5,) and (5, 6) end at
different leaves. Pad (0) and EOS (1) are never docid tokens.

Layout. Most nodes have few children, but atomic docids hang every document off the root (5k+
children), and one [num_nodes, max fan-out] table would cost num_nodes * max fan-out entries.
So a node with at most `max_children` children keeps them in a sorted, -1 padded dense row
(`children_tokens`, `children_next`), and a wider node gets a full vocabulary row in
`wide_next` [num_wide, vocab_size] (next node per token, -1 where not allowed), found through
`wide_row`. Unless given, `max_children` is the width that minimises the total bytes.
"""
from __future__ import annotations

import io
import os
import zipfile
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from irjax.errors import MissingFileError, UserError
from irjax.files import atomic_write_bytes

PAD_ID = 0   # T5: pad, and the decoder start token
EOS_ID = 1
ROOT = 0
FORMAT_VERSION = 1
_ARRAYS = ("children_tokens", "children_next", "wide_row", "wide_next", "leaf_doc")


class TrieFormatError(ValueError, UserError):
    """A saved trie file is unreadable, from another format version, or inconsistent."""


class TrieTables(NamedTuple):
    """The trie's arrays as a pytree: jitted code takes them as an argument, so a large trie is
    not baked into the compiled program as constants. vocab_size is `wide_next.shape[1]`."""

    children_tokens: jax.Array  # int32 [num_nodes, max_children], -1 padded
    children_next: jax.Array    # int32 [num_nodes, max_children], -1 padded
    wide_row: jax.Array         # int32 [num_nodes], row in wide_next or -1
    wide_next: jax.Array        # int32 [num_wide, vocab_size], -1 where not a child
    leaf_doc: jax.Array         # int32 [num_nodes], docid index a leaf ends, else -1


# -- jax operations on the tables ------------------------------------------------------------
def allowed_mask(tables: TrieTables, nodes: jax.Array) -> jax.Array:
    """Bool [..., vocab_size]: which tokens continue each node; invalid nodes (-1) allow none."""
    nodes = jnp.asarray(nodes, jnp.int32)
    vocab = tables.wide_next.shape[1]
    flat = nodes.reshape(-1)
    n = flat.shape[0]
    valid = (flat >= 0) & (flat < tables.leaf_doc.shape[0])
    safe = jnp.where(valid, flat, 0)
    tokens = tables.children_tokens[safe]                               # [n, max_children]
    tokens = jnp.where(valid[:, None] & (tokens >= 0), tokens, vocab)   # padding -> spare column
    mask = jnp.zeros((n, vocab + 1), bool).at[jnp.arange(n)[:, None], tokens].set(True)
    mask = mask[:, :vocab]
    if tables.wide_next.shape[0]:
        row = jnp.where(valid, tables.wide_row[safe], -1)
        wide = tables.wide_next[jnp.maximum(row, 0)] >= 0
        mask = jnp.where((row >= 0)[:, None], wide, mask)
    return mask.reshape(*nodes.shape, vocab)


def advance(tables: TrieTables, nodes: jax.Array, tokens: jax.Array) -> jax.Array:
    """The child reached from each node by each token, or -1 when that edge does not exist."""
    nodes, tokens = jnp.broadcast_arrays(jnp.asarray(nodes, jnp.int32),
                                         jnp.asarray(tokens, jnp.int32))
    vocab = tables.wide_next.shape[1]
    valid = ((nodes >= 0) & (nodes < tables.leaf_doc.shape[0])
             & (tokens >= 0) & (tokens < vocab))
    safe = jnp.where(valid, nodes, 0)
    hit = tables.children_tokens[safe] == tokens[..., None]
    nxt = jnp.max(jnp.where(hit, tables.children_next[safe], -1), axis=-1)
    if tables.wide_next.shape[0]:
        row = tables.wide_row[safe]
        wide = tables.wide_next[jnp.maximum(row, 0), jnp.clip(tokens, 0, vocab - 1)]
        nxt = jnp.where(row >= 0, wide, nxt)
    return jnp.where(valid, nxt, -1)


# -- the trie --------------------------------------------------------------------------------
class DocidTrie:
    """Prefix trie over docids; build with `DocidTrie.build`, persist with `save`/`load`."""

    def __init__(self, children_tokens: np.ndarray, children_next: np.ndarray,
                 wide_row: np.ndarray, wide_next: np.ndarray, leaf_doc: np.ndarray,
                 max_depth: int) -> None:
        arrays = {"children_tokens": children_tokens, "children_next": children_next,
                  "wide_row": wide_row, "wide_next": wide_next, "leaf_doc": leaf_doc}
        _check_arrays(arrays, max_depth)
        self.children_tokens = np.asarray(children_tokens, np.int32)
        self.children_next = np.asarray(children_next, np.int32)
        self.wide_row = np.asarray(wide_row, np.int32)
        self.wide_next = np.asarray(wide_next, np.int32)
        self.leaf_doc = np.asarray(leaf_doc, np.int32)
        self.max_depth = int(max_depth)
        self._tables: TrieTables | None = None

    @classmethod
    def build(cls, docids: Sequence[Sequence[int]], vocab_size: int,
              max_children: int | None = None) -> "DocidTrie":
        """Trie over `docids` (docid i ends at the leaf with leaf_doc == i).

        max_children: width of the dense children rows; nodes with more children get a
        vocabulary-wide row. None picks the width that minimises memory.
        """
        vocab_size = _positive_int(vocab_size, "vocab_size")
        if vocab_size <= EOS_ID + 1:
            raise ValueError(f"vocab_size must be > {EOS_ID + 1} so that some token besides pad "
                             f"({PAD_ID}) and EOS ({EOS_ID}) can appear in a docid, got "
                             f"{vocab_size}")
        if isinstance(docids, (str, bytes)) or not isinstance(docids, (Sequence, np.ndarray)):
            raise TypeError(f"docids must be a sequence of token-id tuples, got {type(docids)}")
        if len(docids) == 0:
            raise ValueError("cannot build a trie over zero docids; pass at least one")
        edges: dict[tuple[int, int], int] = {}
        edge_list: list[tuple[int, int, int]] = []  # (parent, token, child)
        leaf_doc = [-1]
        max_len = 0
        for i, docid in enumerate(docids):
            tokens = _docid_tokens(docid, i, vocab_size)
            max_len = max(max_len, len(tokens))
            node = ROOT
            for t in (*tokens, EOS_ID):
                nxt = edges.get((node, t))
                if nxt is None:
                    nxt = len(leaf_doc)
                    edges[(node, t)] = nxt
                    edge_list.append((node, t, nxt))
                    leaf_doc.append(-1)
                node = nxt
            if leaf_doc[node] != -1:
                raise ValueError(f"docids must be unique: docid {i} {tokens} repeats docid "
                                 f"{leaf_doc[node]}; give every document its own id")
            leaf_doc[node] = i
        parent, token, child = np.asarray(edge_list, np.int64).T
        return cls(*_layout(parent, token, child, len(leaf_doc), vocab_size, max_children),
                   leaf_doc=np.asarray(leaf_doc, np.int32), max_depth=max_len + 1)

    # -- sizes -----------------------------------------------------------------------------
    @property
    def num_nodes(self) -> int:
        return int(self.leaf_doc.shape[0])

    @property
    def num_docs(self) -> int:
        return int(np.count_nonzero(self.leaf_doc >= 0))

    @property
    def vocab_size(self) -> int:
        return int(self.wide_next.shape[1])

    @property
    def max_children(self) -> int:
        """Width of the dense children rows (nodes with more children are wide)."""
        return int(self.children_tokens.shape[1])

    @property
    def num_wide(self) -> int:
        return int(self.wide_next.shape[0])

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in _ARRAYS)

    def __len__(self) -> int:
        return self.num_docs

    def __repr__(self) -> str:
        return (f"DocidTrie(docs={self.num_docs}, nodes={self.num_nodes}, vocab={self.vocab_size}"
                f", max_depth={self.max_depth}, max_children={self.max_children}, "
                f"wide_nodes={self.num_wide}, {self.nbytes / 2**20:.1f} MiB)")

    # -- jax -------------------------------------------------------------------------------
    def tables(self) -> TrieTables:
        """The arrays on the default device (cached); pass these into jitted code."""
        if self._tables is None:
            self._tables = TrieTables(*(jnp.asarray(getattr(self, name)) for name in _ARRAYS))
        return self._tables

    def allowed_mask(self, nodes: jax.Array) -> jax.Array:
        """Bool [..., vocab_size] of tokens allowed after each node (see `allowed_mask`)."""
        return allowed_mask(self.tables(), nodes)

    def advance(self, nodes: jax.Array, tokens: jax.Array) -> jax.Array:
        """Next node per (node, token), -1 for an invalid step (see `advance`)."""
        return advance(self.tables(), nodes, tokens)

    # -- python ----------------------------------------------------------------------------
    def child(self, node: int, token: int) -> int:
        """The child of `node` along `token`, or -1."""
        if not (0 <= node < self.num_nodes and 0 <= token < self.vocab_size):
            return -1
        row = int(self.wide_row[node])
        if row >= 0:
            return int(self.wide_next[row, token])
        hits = np.flatnonzero(self.children_tokens[node] == token)
        return int(self.children_next[node, hits[0]]) if hits.size else -1

    def lookup(self, tokens: Sequence[int]) -> int | None:
        """The node reached by following `tokens` from the root, or None if that path is absent."""
        node = ROOT
        for t in _int_list(tokens, "tokens"):
            node = self.child(node, t)
            if node < 0:
                return None
        return node

    def decode(self, sequence: Sequence[int]) -> int | None:
        """The docid index a generated sequence (docid tokens, EOS, then only pad) spells, or
        None when it is not exactly one valid docid."""
        seq = _int_list(sequence, "sequence")
        node = ROOT
        for i, t in enumerate(seq):
            node = self.child(node, t)
            if node < 0:
                return None
            if t == EOS_ID:
                if any(rest != PAD_ID for rest in seq[i + 1:]):
                    return None
                return int(self.leaf_doc[node])
        return None

    # -- persistence -----------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Writes one .npz atomically (temporary file, then rename)."""
        buffer = io.BytesIO()
        np.savez_compressed(buffer, format_version=np.int64(FORMAT_VERSION),
                            max_depth=np.int64(self.max_depth),
                            **{name: getattr(self, name) for name in _ARRAYS})
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike, expected_vocab_size: int | None = None) -> "DocidTrie":
        """Reads a trie written by `save`, checking its structure (and vocab size if given)."""
        if not os.path.isfile(path):
            raise MissingFileError(f"no docid trie file at {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                contents = {name: data[name] for name in data.files}
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
            raise TrieFormatError(f"{path} is not a readable docid trie ({e}); rebuild it") from e
        missing = [k for k in ("format_version", "max_depth", *_ARRAYS) if k not in contents]
        if missing:
            raise TrieFormatError(f"{path} lacks {missing}; it is not a saved DocidTrie")
        if int(contents["format_version"]) != FORMAT_VERSION:
            raise TrieFormatError(f"{path} has trie format {int(contents['format_version'])}; "
                                  f"this irjax reads version {FORMAT_VERSION}; rebuild the trie")
        try:
            trie = cls(**{name: contents[name] for name in _ARRAYS},
                       max_depth=int(contents["max_depth"]))
        except ValueError as e:
            raise TrieFormatError(f"{path} holds an inconsistent trie ({e}); rebuild it") from e
        if expected_vocab_size is not None and trie.vocab_size != expected_vocab_size:
            raise TrieFormatError(f"{path} was built for vocab size {trie.vocab_size}, but "
                                  f"{expected_vocab_size} was expected; rebuild it for this model")
        return trie


# -- building helpers --------------------------------------------------------------------------
def _layout(parent: np.ndarray, token: np.ndarray, child: np.ndarray, num_nodes: int,
            vocab_size: int, max_children: int | None) -> tuple[np.ndarray, ...]:
    """Dense rows for narrow nodes and vocabulary rows for wide ones, from the edge list."""
    fanout = np.bincount(parent, minlength=num_nodes)
    if max_children is None:
        max_children = _cheapest_width(fanout, vocab_size)
    max_children = _positive_int(max_children, "max_children")
    order = np.lexsort((token, parent))
    parent, token, child = parent[order], token[order], child[order]
    rank = np.arange(parent.size) - np.searchsorted(parent, parent)  # position among siblings
    narrow = fanout[parent] <= max_children
    children_tokens = np.full((num_nodes, max_children), -1, np.int32)
    children_next = np.full((num_nodes, max_children), -1, np.int32)
    children_tokens[parent[narrow], rank[narrow]] = token[narrow]
    children_next[parent[narrow], rank[narrow]] = child[narrow]
    wide_nodes = np.flatnonzero(fanout > max_children)
    wide_row = np.full(num_nodes, -1, np.int32)
    wide_row[wide_nodes] = np.arange(wide_nodes.size)
    wide_next = np.full((wide_nodes.size, vocab_size), -1, np.int32)
    wide_next[wide_row[parent[~narrow]], token[~narrow]] = child[~narrow]
    return children_tokens, children_next, wide_row, wide_next


def _cheapest_width(fanout: np.ndarray, vocab_size: int) -> int:
    """The dense width minimising 8 bytes per dense slot plus 4 per vocabulary-row entry."""
    widths = np.unique(np.maximum(fanout, 1))
    num_wide = fanout.size - np.searchsorted(np.sort(fanout), widths, side="right")
    cost = fanout.size * widths * 8 + num_wide * vocab_size * 4
    return int(widths[np.argmin(cost)])


def _docid_tokens(docid: Any, index: int, vocab_size: int) -> tuple[int, ...]:
    if isinstance(docid, (str, bytes)) or not isinstance(docid, (Sequence, np.ndarray)):
        raise TypeError(f"docid {index} must be a sequence of int token ids, got "
                        f"{type(docid).__name__} {docid!r}; tokenize string ids first")
    tokens = tuple(_int_list(docid, f"docid {index}"))
    if not tokens:
        raise ValueError(f"docid {index} is empty; every docid needs at least one token")
    bad = [t for t in tokens if not EOS_ID < t < vocab_size]
    if bad:
        raise ValueError(f"docid {index} {tokens} has token(s) {bad} outside [{EOS_ID + 1}, "
                         f"{vocab_size}): ids {PAD_ID} (pad) and {EOS_ID} (EOS) are reserved and "
                         f"tokens must be below vocab_size={vocab_size}")
    return tokens


def _int_list(values: Any, name: str) -> list[int]:
    """Python ints from a 1-D integer array or a sequence of ints (bools and floats rejected)."""
    if isinstance(values, np.ndarray):
        if values.ndim != 1 or (values.size and values.dtype.kind not in "iu"):
            raise TypeError(f"{name} must be a 1-D array of int token ids, got dtype "
                            f"{values.dtype} and shape {values.shape}")
        return [int(v) for v in values.tolist()]
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        raise TypeError(f"{name} must be a 1-D sequence of int token ids, got {values!r}")
    return [int(v) for v in values]


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_arrays(arrays: dict[str, Any], max_depth: int) -> None:
    """Shapes, dtypes and ranges, so jitted lookups can never index outside the tables."""
    for name, value in arrays.items():
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "iu":
            raise ValueError(f"{name} must be an integer numpy array")
    tokens, nxt = arrays["children_tokens"], arrays["children_next"]
    wide_row, wide_next, leaf_doc = arrays["wide_row"], arrays["wide_next"], arrays["leaf_doc"]
    if leaf_doc.ndim != 1 or leaf_doc.size == 0:
        raise ValueError(f"leaf_doc must be a non-empty 1-D array, got shape {leaf_doc.shape}")
    n = leaf_doc.size
    if tokens.ndim != 2 or tokens.shape != nxt.shape or tokens.shape[0] != n or not tokens.shape[1]:
        raise ValueError(f"children_tokens {tokens.shape} and children_next {nxt.shape} must both "
                         f"be [num_nodes={n}, max_children >= 1]")
    if wide_row.shape != (n,) or wide_next.ndim != 2 or wide_next.shape[1] <= EOS_ID + 1:
        raise ValueError(f"wide_row {wide_row.shape} must be [{n}] and wide_next "
                         f"{wide_next.shape} [num_wide, vocab_size > 2]")
    vocab = wide_next.shape[1]
    if ((tokens < 0) != (nxt < 0)).any() or (tokens < -1).any() or (tokens >= vocab).any():
        raise ValueError("children_tokens and children_next must be -1 in the same places and "
                         f"tokens below vocab_size={vocab}")
    if ((nxt < -1) | (nxt == ROOT) | (nxt >= n)).any() or (
            (wide_next < -1) | (wide_next == ROOT) | (wide_next >= n)).any():
        raise ValueError(f"child node ids must be in [1, {n}) or -1")
    rows = wide_row[wide_row >= 0]
    if (wide_row < -1).any() or np.sort(rows).tolist() != list(range(wide_next.shape[0])):
        raise ValueError("wide_row must map each wide node to its own wide_next row")
    docs = leaf_doc[leaf_doc >= 0]
    if (leaf_doc < -1).any() or docs.size == 0 or np.unique(docs).size != docs.size:
        raise ValueError("leaf_doc must hold unique docid indices on leaves and -1 elsewhere")
    if isinstance(max_depth, bool) or not isinstance(max_depth, (int, np.integer)) or max_depth < 2:
        raise ValueError(f"max_depth must be an integer >= 2 (a token plus EOS), got {max_depth!r}")
