"""What every DSI docid scheme shares: the docid table, its checks, and JSON save/load.

A docid is the token sequence a generative retriever decodes for a document: a tuple of ids in the
decoder's output vocabulary, *without* EOS (the seq2seq targets append it). Schemes that need
tokens of their own (atomic, semantic) append them after the base vocabulary, so their ids start
at `base_vocab_size` (T5: 32000 SentencePiece pieces + 100 sentinels, padded to 32128) and the
model's output vocabulary is `vocab_size = base_vocab_size + num_new_tokens`.

A scheme is built once (`SomeScheme.build(collection_or_doc_ids, ...)`) and then only looked up,
so the base class holds the finished table and each subclass only decides how to fill it. Saved
files carry a fingerprint of the document ids in order: a docid file built for another collection
(or another version of it) is refused on load instead of silently mapping docids to wrong
documents.
"""
from __future__ import annotations

import hashlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from irjax.data.collection import Collection
from irjax.errors import UserError
from irjax.files import atomic_write_text

T5_BASE_VOCAB_SIZE = 32128
PAD_ID = 0
EOS_ID = 1
_FORMAT_VERSION = 1

DocIds = Collection | Sequence[str]
SchemeT = TypeVar("SchemeT", bound="DocidScheme")


class DocidError(ValueError, UserError):
    """A docid table that cannot be used: duplicates, bad tokens, or a mismatched collection."""


def resolve_doc_ids(collection_or_doc_ids: DocIds) -> list[str]:
    """The document ids in corpus order, from a `Collection` or a plain sequence of ids."""
    if isinstance(collection_or_doc_ids, Collection):
        return list(collection_or_doc_ids.doc_ids)
    if isinstance(collection_or_doc_ids, str):
        raise TypeError("pass a Collection or a sequence of document ids, not a single string")
    doc_ids = list(collection_or_doc_ids)
    if not doc_ids:
        raise DocidError("no document ids given; a docid scheme needs at least one document")
    seen: set[str] = set()
    for position, doc_id in enumerate(doc_ids):
        if not isinstance(doc_id, str) or not doc_id:
            raise DocidError(f"document id at position {position} is {doc_id!r}; ids must be "
                             "non-empty strings as in corpus.jsonl")
        if doc_id in seen:
            raise DocidError(f"document id {doc_id!r} appears twice (again at position {position})")
        seen.add(doc_id)
    return doc_ids


def doc_ids_fingerprint(doc_ids: Sequence[str]) -> str:
    """Hex sha256 of the ids in order: docid tables are positional, so order matters too."""
    return hashlib.sha256(json.dumps(list(doc_ids), ensure_ascii=False).encode()).hexdigest()


class DocidScheme(ABC):
    """A finished doc id -> docid table; subclasses implement `build` and set `name`."""

    name: ClassVar[str]

    def __init__(self, doc_ids: Sequence[str], docids: Sequence[Sequence[int]], *,
                 base_vocab_size: int, num_new_tokens: int, config: Mapping[str, Any] | None = None,
                 stats: Mapping[str, Any] | None = None):
        if len(doc_ids) != len(docids):
            raise DocidError(f"{len(doc_ids)} document ids but {len(docids)} docids")
        if base_vocab_size < 2 or num_new_tokens < 0:
            raise DocidError(f"need base_vocab_size >= 2 and num_new_tokens >= 0, got "
                             f"{base_vocab_size} and {num_new_tokens}")
        self._doc_ids = tuple(doc_ids)
        self._docids = tuple(tuple(int(t) for t in d) for d in docids)
        self.base_vocab_size = int(base_vocab_size)
        self.num_new_tokens = int(num_new_tokens)
        self.config = dict(config or {})
        self.stats = dict(stats or {})
        self._index = {doc_id: i for i, doc_id in enumerate(self._doc_ids)}
        if len(self._index) != len(self._doc_ids):
            resolve_doc_ids(self._doc_ids)  # raises naming the duplicate
        self._by_docid: dict[tuple[int, ...], str] = {}
        self._check()

    def _check(self) -> None:
        """Every docid non-empty, free of pad/EOS, inside the vocabulary, and unique."""
        limit = self.vocab_size
        for doc_id, docid in zip(self._doc_ids, self._docids):
            if not docid:
                raise DocidError(f"{self.name}: document {doc_id!r} has an empty docid")
            bad = [t for t in docid if t in (PAD_ID, EOS_ID) or not 0 <= t < limit]
            if bad:
                raise DocidError(f"{self.name}: docid {docid} of document {doc_id!r} has token(s) "
                                 f"{bad}; tokens must lie in [2, {limit}) and never be pad ({PAD_ID}) "
                                 f"or EOS ({EOS_ID})")
            other = self._by_docid.setdefault(docid, doc_id)
            if other != doc_id:
                raise DocidError(f"{self.name}: documents {other!r} and {doc_id!r} share docid "
                                 f"{docid}; a generative retriever could not tell them apart")

    # -- building --------------------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def build(cls: type[SchemeT], collection_or_doc_ids: DocIds, **options: Any) -> SchemeT:
        """Assigns a docid to every document of `collection_or_doc_ids` (in corpus order)."""

    # -- lookup ----------------------------------------------------------------------------------
    @property
    def doc_ids(self) -> tuple[str, ...]:
        """Document ids in the order the scheme was built with (corpus order)."""
        return self._doc_ids

    @property
    def vocab_size(self) -> int:
        """The decoder's output vocabulary size this scheme needs."""
        return self.base_vocab_size + self.num_new_tokens

    @property
    def max_length(self) -> int:
        """Tokens in the longest docid (EOS not counted)."""
        return max(len(d) for d in self._docids)

    @property
    def fingerprint(self) -> str:
        return doc_ids_fingerprint(self._doc_ids)

    def __len__(self) -> int:
        return len(self._doc_ids)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._index

    def docid_tokens(self, doc_id: str) -> tuple[int, ...]:
        """The docid of `doc_id`, without EOS."""
        try:
            return self._docids[self._index[doc_id]]
        except KeyError:
            raise KeyError(f"document {doc_id!r} has no docid in this {self.name} scheme of "
                           f"{len(self)} documents; was it built for another collection?") from None

    def doc_id_for(self, tokens: Sequence[int]) -> str | None:
        """The document a decoded docid (EOS and padding stripped) names, or None if none does."""
        return self._by_docid.get(tuple(int(t) for t in tokens))

    def docids(self) -> list[tuple[int, ...]]:
        """All docids in `doc_ids` order, e.g. to build the decoding trie."""
        return list(self._docids)

    def describe(self) -> str:
        """One line: scheme, size, vocabulary and docid lengths, plus any scheme statistics."""
        lengths = [len(d) for d in self._docids]
        extra = "".join(f", {k}={v}" for k, v in self.stats.items() if not isinstance(v, dict))
        return (f"{self.name} docids for {len(self)} documents: {self.num_new_tokens} new tokens "
                f"(vocab {self.vocab_size}), length {min(lengths)}-{max(lengths)} "
                f"(mean {sum(lengths) / len(lengths):.2f}){extra}")

    def check_documents(self, collection_or_doc_ids: DocIds, where: str = "") -> None:
        """Raises unless the scheme was built for exactly these documents in this order."""
        doc_ids = resolve_doc_ids(collection_or_doc_ids)
        if doc_ids_fingerprint(doc_ids) == self.fingerprint:
            return
        missing = [d for d in doc_ids if d not in self._index]
        extra = len(set(self._doc_ids) - set(doc_ids))
        detail = (f"{len(missing)} documents have no docid (e.g. {missing[:3]}) and {extra} docids "
                  f"name documents not in the collection" if missing or extra
                  else "the same documents in a different order")
        prefix = f"{where}: " if where else ""
        raise DocidError(f"{prefix}{self.name} docids were built for {len(self)} other documents "
                         f"({detail}); rebuild the docids for this collection")

    # -- persistence -----------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"format_version": _FORMAT_VERSION, "scheme": self.name,
                "doc_ids_fingerprint": self.fingerprint, "num_documents": len(self),
                "base_vocab_size": self.base_vocab_size, "num_new_tokens": self.num_new_tokens,
                "config": self.config, "stats": self.stats, "doc_ids": list(self._doc_ids),
                "docids": [list(d) for d in self._docids]}

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the table as JSON atomically (temporary file, then rename)."""
        return atomic_write_text(path, json.dumps(self.to_json(), ensure_ascii=False) + "\n")

    @classmethod
    def load(cls: type[SchemeT], path: str | os.PathLike,
             collection_or_doc_ids: DocIds | None = None) -> SchemeT:
        """Reads a saved table; with `collection_or_doc_ids`, refuses one built for other documents.

        Called on `DocidScheme` itself it returns whichever registered scheme the file holds.
        """
        from irjax.data.docids import SCHEMES  # the registry imports the subclasses

        path = Path(path)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DocidError(f"{path}: docid file not found") from None
        except json.JSONDecodeError as e:
            raise DocidError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); was the file "
                             "written by DocidScheme.save?") from None
        if not isinstance(payload, dict) or payload.get("format_version") != _FORMAT_VERSION:
            raise DocidError(f"{path}: not an irjax docid file of format version {_FORMAT_VERSION}")
        for key in ("scheme", "doc_ids", "docids", "doc_ids_fingerprint", "base_vocab_size",
                    "num_new_tokens"):
            if key not in payload:
                raise DocidError(f"{path}: field {key!r} missing")
        scheme = payload["scheme"]
        if scheme not in SCHEMES:
            raise DocidError(f"{path}: field 'scheme': unknown scheme {scheme!r}; known: {sorted(SCHEMES)}")
        target = SCHEMES[scheme]
        if cls is not DocidScheme and target is not cls:
            raise DocidError(f"{path}: holds {scheme!r} docids, not {cls.name!r}")
        if doc_ids_fingerprint(payload["doc_ids"]) != payload["doc_ids_fingerprint"]:
            raise DocidError(f"{path}: field 'doc_ids' does not match its fingerprint; the file was "
                             "edited or truncated")
        try:
            loaded = target(payload["doc_ids"], payload["docids"],
                            base_vocab_size=payload["base_vocab_size"],
                            num_new_tokens=payload["num_new_tokens"], config=payload.get("config"),
                            stats=payload.get("stats"))
        except (DocidError, TypeError, ValueError) as e:
            raise DocidError(f"{path}: {e}") from None
        if collection_or_doc_ids is not None:
            loaded.check_documents(collection_or_doc_ids, where=str(path))
        return loaded  # type: ignore[return-value]
