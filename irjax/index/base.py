"""The contract every nearest-neighbour backend honours, plus the on-disk manifest that lets a
saved index prove it is complete, uncorrupted and built over the corpus the caller expects.

The manifest proves integrity, not authenticity: its checksums show that the files are the ones
recorded, but anyone who can write the folder can re-record them. Loaders therefore never let
the manifest decide what is executed or where data is read from (scann_index.load_scann_searcher
reads only the file names irjax's writer produces; nothing is unpickled).

Backends implement `_build`, `_search`, `_save_data` and `_load_data`; validation, ids, atomic
saving and load-time checks live here so every backend fails the same clear way on bad input.

An index directory may be a URI (gs://...: irjax/paths.py). Saving builds it in a local staging
folder and uploads it with the manifest last (files.atomic_directory), so every backend writes
local files as always. Loading copies the files the manifest lists into a local folder first,
$IRJAX_CACHE_DIR/remote_indexes/<URI and manifest digest>/ (checking each against the
manifest), and loads from there: faiss and ScaNN read local files only, and one code path
keeps every backend's checks the same. A copy is reused while the remote manifest is unchanged.
"""
from __future__ import annotations

import abc
import collections
import dataclasses
import hashlib
import importlib
import inspect
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from irjax.errors import MissingFileError, UserError
from irjax.files import (atomic_directory, atomic_write_text, cache_root, copy_file,
                         published_mode, remove_orphan_temporaries, sha256_file,
                         temporary_prefix)
from irjax.paths import AnyPath, as_path

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
IDS_NAME = "ids.json"
REMOTE_COPIES = "remote_indexes"
METRICS = ("dot", "cosine")
_MANIFEST_KEYS = ("format_version", "kind", "dimension", "count", "metric", "ids_sha256",
                  "files", "options", "build_params")


class IndexIntegrityError(ValueError, UserError):
    """A saved index is incomplete, corrupted, or not the index the caller said it expected."""


def ids_checksum(ids: Sequence[str]) -> str:
    """sha256 of the ids list; callers pass it to `load(expected_ids_checksum=...)` to make sure an
    index on disk was built over the same documents, in the same order, as their corpus."""
    payload = json.dumps(list(ids), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """Top-k neighbours per query; rows are sorted by descending score."""

    scores: np.ndarray  # float32 [num_queries, k]
    indices: np.ndarray  # int64 [num_queries, k], rows of the vectors the index was built over
    ids: list[list[str]]  # doc ids, same layout as `indices`

    def __post_init__(self) -> None:
        if self.scores.shape != self.indices.shape or self.scores.ndim != 2:
            raise ValueError(f"scores {self.scores.shape} and indices {self.indices.shape} must be "
                             "2-D arrays of the same shape")
        if len(self.ids) != self.scores.shape[0]:
            raise ValueError(f"ids has {len(self.ids)} rows, scores {self.scores.shape[0]}")

    def to_run(self, query_ids: Sequence[str]) -> dict[str, dict[str, float]]:
        """The result as a TREC-style run {query_id: {doc_id: score}} for evaluation tools."""
        if isinstance(query_ids, (str, bytes)):
            raise TypeError("query_ids must be a sequence of strings, not a single string")
        query_ids = list(query_ids)
        if len(query_ids) != len(self.ids):
            raise ValueError(f"got {len(query_ids)} query ids for {len(self.ids)} result rows; "
                             "pass one id per query, in the order the queries were searched")
        if len(set(query_ids)) != len(query_ids):
            raise ValueError(f"query ids must be unique (duplicates: {_duplicates(query_ids)}); "
                             "a run maps each query id to one ranking")
        return {qid: {doc: float(s) for doc, s in zip(docs, row)}
                for qid, docs, row in zip(query_ids, self.ids, self.scores.tolist())}


class Index(abc.ABC):
    """A searchable set of vectors keyed by string ids; higher score means more similar."""

    kind: ClassVar[str]
    # Data files (relative to the index directory) a backend cannot load without.
    required_files: ClassVar[tuple[str, ...]] = ()

    def __init__(self, metric: str = "dot") -> None:
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose one of {list(METRICS)} ('dot' is "
                             "inner product, 'cosine' normalises vectors and queries first)")
        self.metric = metric
        self._ids: list[str] | None = None
        self._id_array: np.ndarray | None = None
        self._dim: int | None = None

    # -- backend hooks ---------------------------------------------------------------------------
    @abc.abstractmethod
    def options(self) -> dict[str, Any]:
        """Constructor keyword arguments (besides metric) that recreate this index's settings."""

    def build_params(self) -> dict[str, Any]:
        """Parameters derived at build time (e.g. from corpus size), recorded in the manifest."""
        return {}

    @abc.abstractmethod
    def _build(self, vectors: np.ndarray) -> None:
        """Indexes validated float32 C-contiguous vectors [n, d]."""

    @abc.abstractmethod
    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Returns (scores, row indices), each [num_queries, k], rows sorted by descending score;
        1 <= k <= len(self) is guaranteed."""

    @abc.abstractmethod
    def _save_data(self, directory: Path) -> None:
        """Writes the backend's data files into `directory` (a fresh temporary directory)."""

    @abc.abstractmethod
    def _load_data(self, directory: Path, manifest: dict[str, Any]) -> tuple[int, int]:
        """Reads files written by `_save_data` (already checksum-verified) and returns the
        (count, dimension) actually found in them, so the caller can check the manifest."""

    # -- public API ------------------------------------------------------------------------------
    @property
    def is_built(self) -> bool:
        return self._ids is not None

    @property
    def dim(self) -> int:
        self._require_built()
        return int(self._dim or 0)

    @property
    def ids(self) -> list[str]:
        self._require_built()
        return list(self._ids or [])

    def __len__(self) -> int:
        return 0 if self._ids is None else len(self._ids)

    def build(self, vectors: np.ndarray, ids: Sequence[str]) -> "Index":
        """Indexes `vectors` [n, d]; row i is known by ids[i]. Returns self."""
        matrix = as_float_matrix(vectors, "vectors")
        if matrix.shape[0] == 0:
            raise ValueError("cannot build an index over zero vectors; pass at least one row")
        id_list = validate_ids(ids, matrix.shape[0])
        if self.metric == "cosine":
            matrix = _normalise(matrix, "vectors")
        self._build(matrix)
        self._set_ids(id_list, matrix.shape[1])
        return self

    def search(self, queries: np.ndarray, k: int) -> SearchResult:
        """The k best documents per query row; k larger than the index is clamped to its size."""
        self._require_built()
        matrix = as_float_matrix(queries, "queries")
        if matrix.shape[1] != self._dim:
            raise ValueError(f"queries have dimension {matrix.shape[1]} but the index holds "
                             f"{self._dim}-dimensional vectors; encode queries with the same model")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        k = min(int(k), len(self))
        if matrix.shape[0] == 0:
            return SearchResult(np.zeros((0, k), np.float32), np.zeros((0, k), np.int64), [])
        if self.metric == "cosine":
            matrix = _normalise(matrix, "queries")
        scores, indices = self._search(matrix, k)
        indices = np.asarray(indices, dtype=np.int64)
        assert self._id_array is not None
        ids = self._id_array[indices].tolist()
        return SearchResult(np.asarray(scores, dtype=np.float32), indices, ids)

    def save(self, directory: str | os.PathLike) -> None:
        """Writes the index and a manifest atomically: a crash leaves either the old directory or
        the complete new one, never a mixture."""
        self._require_built()
        with atomic_directory(directory, last=(MANIFEST_NAME,)) as tmp:
            self._save_data(tmp)
            atomic_write_text(tmp / IDS_NAME, json.dumps(self._ids, ensure_ascii=False))
            files = {path.relative_to(tmp).as_posix(): {"sha256": sha256_file(path),
                                                        "size": path.stat().st_size}
                     for path in sorted(tmp.rglob("*")) if path.is_file()}
            manifest = {"format_version": FORMAT_VERSION, "kind": self.kind,
                        "dimension": self._dim, "count": len(self), "metric": self.metric,
                        "ids_sha256": ids_checksum(self._ids or []), "files": files,
                        "options": self.options(), "build_params": self.build_params()}
            atomic_write_text(tmp / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: str | os.PathLike, expected_dim: int | None = None,
             expected_ids_checksum: str | None = None) -> "Index":
        """Loads a saved index after verifying every file against the manifest; the optional
        expectations reject an intact index that belongs to a different model or corpus.
        A remote index is loaded from a local copy (module docstring)."""
        directory = as_path(directory)
        manifest = read_manifest(directory)
        if manifest["kind"] != cls.kind:
            raise IndexIntegrityError(f"{directory} holds a {manifest['kind']!r} index, not "
                                      f"{cls.kind!r}; load it with irjax.index.base.load_index")
        if not isinstance(directory, Path):
            directory = local_copy(directory, manifest)
        verify_files(directory, manifest, (IDS_NAME, *cls.required_files))
        ids = _read_ids(directory, manifest)
        if expected_ids_checksum is not None and manifest["ids_sha256"] != expected_ids_checksum:
            raise IndexIntegrityError(f"{directory} was built over different document ids than "
                                      "expected (ids checksum mismatch); rebuild it for this "
                                      "corpus")
        if expected_dim is not None and manifest["dimension"] != expected_dim:
            raise IndexIntegrityError(f"{directory} holds {manifest['dimension']}-dimensional "
                                      f"vectors but {expected_dim} were expected; rebuild it with "
                                      "the current encoder")
        try:
            index = cls(metric=manifest["metric"], **manifest["options"])
        except (TypeError, ValueError) as e:
            raise IndexIntegrityError(f"{directory}/{MANIFEST_NAME} records settings this "
                                      f"{cls.kind!r} index rejects ({e}); rebuild the index") from e
        count, dim = index._load_data(directory, manifest)
        if (count, dim) != (manifest["count"], manifest["dimension"]):
            raise IndexIntegrityError(
                f"{directory}: manifest records {manifest['count']} vectors of dimension "
                f"{manifest['dimension']} but the data files hold {count} of dimension {dim}; the "
                "manifest was edited or belongs to another index; rebuild the index")
        index._set_ids(ids, dim)
        return index

    def _set_ids(self, ids: list[str], dim: int) -> None:
        self._ids = ids
        self._id_array = np.asarray(ids, dtype=object)
        self._dim = dim

    def _require_built(self) -> None:
        if self._ids is None:
            raise RuntimeError(f"this {type(self).__name__} is empty; call build() or load() first")

    def __repr__(self) -> str:
        shape = f"{len(self)}x{self._dim}" if self.is_built else "unbuilt"
        return f"{type(self).__name__}({shape}, metric={self.metric!r}, {self.options()})"


# -- input validation ----------------------------------------------------------------------------
def as_float_matrix(array: Any, name: str) -> np.ndarray:
    """Coerces real numeric input to a C-contiguous float32 [rows, dim] matrix, or says why not."""
    try:
        matrix = np.asarray(array)
    except ValueError as e:  # ragged nested lists
        raise ValueError(f"{name} must be a rectangular 2-D array: {e}") from e
    if matrix.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers (float or int), got dtype {matrix.dtype}; "
                        "convert it with np.asarray(x, dtype=np.float32)")
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [count, dim], got shape {matrix.shape}; "
                         "for a single vector use x[None, :]")
    if matrix.shape[1] == 0:
        raise ValueError(f"{name} has dimension 0; vectors need at least one component")
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(f"{name} has NaN or infinite values in {bad.size} row(s) (first rows: "
                         f"{bad[:5].tolist()}); fix the encoder output or drop those rows")
    return matrix


def validate_ids(ids: Sequence[str], count: int) -> list[str]:
    """A list copy of `ids` after checking there is one unique string per vector."""
    if isinstance(ids, (str, bytes)) or not isinstance(ids, (Sequence, np.ndarray)):
        raise TypeError(f"ids must be a sequence of strings (one per vector), got {type(ids)}")
    id_list = list(ids)
    if len(id_list) != count:
        raise ValueError(f"got {len(id_list)} ids for {count} vectors; pass exactly one id per row")
    not_str = [i for i, x in enumerate(id_list) if not isinstance(x, str)]
    if not_str:
        raise TypeError(f"ids must be strings; position {not_str[0]} holds "
                        f"{type(id_list[not_str[0]]).__name__} {id_list[not_str[0]]!r}")
    if len(set(id_list)) != len(id_list):
        raise ValueError(f"ids must be unique; duplicated: {_duplicates(id_list)}")
    return id_list


def _duplicates(items: Sequence[str], limit: int = 5) -> list[str]:
    return [item for item, count in collections.Counter(items).items() if count > 1][:limit]


def _normalise(matrix: np.ndarray, name: str) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{name} has all-zero rows {np.flatnonzero(norms[:, 0] == 0)[:5].tolist()}"
                         "; cosine similarity is undefined for them")
    return np.ascontiguousarray(matrix / norms, dtype=np.float32)


# -- manifest verification -----------------------------------------------------------------------
def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """The parsed manifest of a saved index (local or remote), with its structure checked."""
    directory = as_path(directory)
    if not directory.is_dir():
        raise MissingFileError(f"no index directory at {directory}")
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise IndexIntegrityError(f"{directory} has no {MANIFEST_NAME}: it is not a saved irjax "
                                  "index or its save never finished; rebuild the index")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IndexIntegrityError(f"{path} is not valid JSON ({e}); rebuild the index") from e
    if not isinstance(manifest, dict):
        raise IndexIntegrityError(f"{path} must hold a JSON object; rebuild the index")
    missing = [key for key in _MANIFEST_KEYS if key not in manifest]
    if missing:
        raise IndexIntegrityError(f"{path} lacks fields {missing}; rebuild the index")
    if manifest["format_version"] != FORMAT_VERSION:
        raise IndexIntegrityError(f"{path} has format version {manifest['format_version']!r}; this "
                                  f"irjax reads version {FORMAT_VERSION}; rebuild the index")
    for key in ("count", "dimension"):
        value = manifest[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise IndexIntegrityError(f"{path}: {key} must be a positive integer, got {value!r}")
    if not isinstance(manifest["files"], dict) or not isinstance(manifest["options"], dict):
        raise IndexIntegrityError(f"{path}: 'files' and 'options' must be JSON objects")
    return manifest


def verify_files(directory: Path, manifest: dict[str, Any], required: Sequence[str]) -> None:
    """Checks that each file the manifest lists exists with the recorded size and sha256."""
    files = manifest["files"]
    for name in required:
        if name not in files:
            raise IndexIntegrityError(f"{directory}/{MANIFEST_NAME} does not list required file "
                                      f"{name!r}; the manifest was edited; rebuild the index")
    for name, record in files.items():
        path = directory / _listed(name)
        if not path.is_file():
            raise IndexIntegrityError(f"{path} is missing (listed in {MANIFEST_NAME}); the "
                                      "index is incomplete; rebuild it")
        size = path.stat().st_size
        if size != record.get("size"):
            raise IndexIntegrityError(f"{path} is {size} bytes but the manifest expects "
                                      f"{record.get('size')} bytes (truncated or replaced); "
                                      "rebuild the index")
        if sha256_file(path) != record.get("sha256"):
            raise IndexIntegrityError(f"{path} fails its sha256 check (corrupted or modified); "
                                      "rebuild the index")


def _listed(name: str) -> Path:
    """A file name from a manifest, refused if it could point outside the index directory."""
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or name == MANIFEST_NAME:
        raise IndexIntegrityError(f"manifest lists an illegal file path {name!r}")
    return rel


def local_copy(directory: AnyPath, manifest: dict[str, Any]) -> Path:
    """A local folder holding the files `manifest` lists of the remote index `directory`,
    each checked against its sha256 (module docstring). Copied into a temporary folder that is
    renamed into place, so a copy that exists is complete; when two processes copy at once, the
    first rename wins and the other's copy is dropped."""
    text = json.dumps(manifest, indent=2, sort_keys=True)
    key = (hashlib.sha256(str(directory).encode()).hexdigest()[:16] + "-"
           + hashlib.sha256(text.encode()).hexdigest()[:16])
    target = cache_root() / REMOTE_COPIES / key
    if (target / MANIFEST_NAME).is_file():
        return target
    names = {name: _listed(name) for name in manifest["files"]}
    log.info("copying remote index %s to %s (faiss and ScaNN read local files only)",
             directory, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_orphan_temporaries(target.parent, name=target.name)
    staging = Path(tempfile.mkdtemp(prefix=temporary_prefix(target.name), suffix=".tmp",
                                    dir=target.parent))
    try:
        for name, rel in names.items():
            try:
                copy_file(directory / rel.as_posix(), staging / rel)
            except FileNotFoundError:
                raise IndexIntegrityError(f"{directory}/{name} is missing (listed in "
                                          f"{MANIFEST_NAME}); the index is incomplete; rebuild "
                                          "it") from None
            if sha256_file(staging / rel) != manifest["files"][name].get("sha256"):
                raise IndexIntegrityError(f"{directory}/{name} fails its sha256 check "
                                          "(corrupted or modified); rebuild the index")
        atomic_write_text(staging / MANIFEST_NAME, text)
        os.chmod(staging, published_mode(directory=True))
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / MANIFEST_NAME).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _read_ids(directory: Path, manifest: dict[str, Any]) -> list[str]:
    ids = json.loads((directory / IDS_NAME).read_text(encoding="utf-8"))
    if not isinstance(ids, list) or not all(isinstance(x, str) for x in ids):
        raise IndexIntegrityError(f"{directory / IDS_NAME} must hold a JSON list of strings")
    if len(ids) != manifest["count"]:
        raise IndexIntegrityError(f"{directory}: manifest records {manifest['count']} vectors but "
                                  f"{IDS_NAME} holds {len(ids)} ids; rebuild the index")
    if ids_checksum(ids) != manifest["ids_sha256"]:
        raise IndexIntegrityError(f"{directory / IDS_NAME} does not match the ids checksum in the "
                                  "manifest (ids edited or from another index); rebuild the index")
    return ids


# -- registry ------------------------------------------------------------------------------------
_REGISTRY: dict[str, type[Index]] = {}
# Built-in backends are imported on first use so that, e.g., exact search never imports scann.
_BUILTIN_MODULES = {"exact": "irjax.index.exact", "scann": "irjax.index.scann_index",
                    "faiss": "irjax.index.faiss_index",
                    "scann_sharded": "irjax.index.sharded_scann",
                    "compressed": "irjax.index.compressed",
                    "pq_codes": "irjax.index.pq_codes", "bebr": "irjax.index.bebr_index"}


def register_index(cls: type[Index]) -> type[Index]:
    """Class decorator making a backend available to `create_index` and `load_index`."""
    kind = getattr(cls, "kind", None)
    if not isinstance(kind, str) or not kind:
        raise TypeError(f"{cls.__name__} must define a non-empty string class attribute 'kind'")
    if _REGISTRY.get(kind, cls) is not cls:
        raise ValueError(f"index kind {kind!r} is already registered by {_REGISTRY[kind]}")
    _REGISTRY[kind] = cls
    return cls


def available_kinds() -> list[str]:
    """Every kind `create_index` accepts."""
    return sorted(set(_BUILTIN_MODULES) | set(_REGISTRY))


def index_class(kind: str) -> type[Index]:
    """The backend class for `kind`, importing a built-in backend module on demand."""
    if kind not in _REGISTRY and kind in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[kind])
    if kind not in _REGISTRY:
        raise ValueError(f"unknown index kind {kind!r}; choose one of {available_kinds()}")
    return _REGISTRY[kind]


def create_index(kind: str, **options: Any) -> Index:
    """An unbuilt index of the given kind ('exact', 'scann', 'faiss', 'scann_sharded',
    'compressed', 'pq_codes' or 'bebr')."""
    cls = index_class(kind)
    signature = inspect.signature(cls)
    try:
        signature.bind(**options)
    except TypeError as e:
        raise TypeError(f"bad options for a {kind!r} index ({e}); accepted options: "
                        f"{list(signature.parameters)}") from e
    return cls(**options)


def load_index(directory: str | os.PathLike, expected_dim: int | None = None,
               expected_ids_checksum: str | None = None) -> Index:
    """Loads whichever kind of index `directory` holds, verifying it like `Index.load`."""
    kind = read_manifest(directory)["kind"]
    return index_class(kind).load(directory, expected_dim=expected_dim,
                                  expected_ids_checksum=expected_ids_checksum)
