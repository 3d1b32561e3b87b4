"""Docid schemes for generative retrieval (DSI), one module each, behind one registry.

    scheme = create_docid_scheme("semantic", collection, embeddings=doc_vectors)
    scheme.docid_tokens("4983")          # e.g. (32131, 32135, 32128), no EOS
    scheme.save(workdir / "docids.json")
    scheme = load_docid_scheme(workdir / "docids.json", collection)  # refuses other corpora

The model's output vocabulary is `scheme.vocab_size` (= base vocabulary + `num_new_tokens`).
"""
from __future__ import annotations

import os
from typing import Any

from irjax.data.docids.atomic import AtomicDocids
from irjax.data.docids.base import (EOS_ID, PAD_ID, T5_BASE_VOCAB_SIZE, DocIds, DocidError,
                                    DocidScheme, doc_ids_fingerprint, resolve_doc_ids)
from irjax.data.docids.naive_string import NaiveStringDocids
from irjax.data.docids.semantic import SemanticDocids

SCHEMES: dict[str, type[DocidScheme]] = {
    AtomicDocids.name: AtomicDocids,
    NaiveStringDocids.name: NaiveStringDocids,
    SemanticDocids.name: SemanticDocids,
}


def create_docid_scheme(name: str, collection_or_doc_ids: DocIds, **options: Any) -> DocidScheme:
    """Builds the scheme `name` for these documents; options go to that scheme's `build`."""
    if name not in SCHEMES:
        raise ValueError(f"unknown docid scheme {name!r}; choose one of {sorted(SCHEMES)}")
    return SCHEMES[name].build(collection_or_doc_ids, **options)


def load_docid_scheme(path: str | os.PathLike,
                      collection_or_doc_ids: DocIds | None = None) -> DocidScheme:
    """Reads whichever scheme `path` holds; with documents given, refuses a mismatched corpus."""
    return DocidScheme.load(path, collection_or_doc_ids)


__all__ = ["AtomicDocids", "DocIds", "DocidError", "DocidScheme", "EOS_ID", "NaiveStringDocids",
           "PAD_ID", "SCHEMES", "SemanticDocids", "T5_BASE_VOCAB_SIZE", "create_docid_scheme",
           "doc_ids_fingerprint", "load_docid_scheme", "resolve_doc_ids"]
