"""Approximate search with ScaNN (partitioning tree + anisotropic asymmetric hashing + exact
reordering), with parameters derived from the corpus size so callers rarely need to tune them.

Parameter plan (`plan_scann`), for n vectors:
  * n < brute_force_below (default 1,024): exact float32 brute force; AH codebooks need more
    points than that to train, and scanning a thousand vectors costs microseconds.
  * n < tree_above (default 100,000, ScaNN's guidance: AH + rescoring below 100k points,
    partitioning above): no partitioning tree; asymmetric hashing scores every point, then the
    best reorder_num_neighbors are rescored exactly. Measured on SciFact (5,183 all-MiniLM-L6-v2
    vectors): recall@10 1.000 and recall@100 0.9998 against exact, nDCG@10 equal to exact; a
    sqrt(n) tree at this size lost ~1-2% nDCG@10 even searching 40% of its leaves, because the
    clusters of real text embeddings are weak. The scaling study (tools/scale_study.py) showed
    the same at 35,183 passages with the old 20,000 threshold: a 187-leaf tree searching 15%
    gave recall@10 0.957 and nDCG@10 0.5724 against exact search's 0.5926.
  * otherwise a tree with num_leaves = round(sqrt(n)) (ScaNN's rule of thumb), capped so leaves
    average at least 50 points. leaves_to_search = 15% of the leaves, raised if needed so that at
    least ~2,048 points are scored per query. Measured recall@10 on clustered unit vectors
    (d=64): 0.98 at 5k (mode='tree': 30 of 71 leaves), 0.997 at 20k (22 of 141 leaves); at 1M
    this searches 150 of 1,000 leaves. Weakly clustered data is harder (~0.88 with 1,000
    clusters at 20k): raise search_fraction or leaves_to_search there.
  * AH with 2 dimensions per block and anisotropic threshold 0.2 (ScaNN's recommendation for
    normalised inner-product data), trained on up to 100k vectors, then the best
    max(reorder_num_neighbors, k) candidates (default 400) are rescored exactly.
Queries whose searched leaves hold fewer than k points (possible only for large k) are re-run
over all leaves, so every result row is complete.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import scann

from irjax.index.base import Index, IndexIntegrityError, register_index

SCANN_DIR = "scann"
# Every file ScaNN's serialize() writes for the searchers irjax builds (brute force, asymmetric
# hashing, tree + hashing). Never scann_docids.pkl: irjax builds searchers without docids.
SCANN_FILES = frozenset({"scann_assets.pbtxt", "scann_config.pb", "dataset.npy", "ah_codebook.pb",
                         "hashed_dataset.npy", "serialized_partitioner.pb",
                         "datapoint_to_token.npy"})
_ASSET_PATH = re.compile(r'asset_path:\s*"([^"]*)"')
MODES = ("auto", "tree", "ah", "brute_force")
_MIN_POINTS_PER_LEAF = 50
_MIN_POINTS_TO_SEARCH = 2048
_MAX_TRAINING_SAMPLE = 100_000
_PARALLEL_BATCH = 256


@dataclasses.dataclass(frozen=True)
class ScannPlan:
    """Concrete ScaNN parameters for one corpus."""

    mode: str  # "tree", "ah" (asymmetric hashing over all points) or "brute_force"
    num_leaves: int = 0
    leaves_to_search: int = 0
    reorder_num_neighbors: int = 0
    training_sample_size: int = 0


def plan_scann(count: int, mode: str = "auto", num_leaves: int | None = None,
               leaves_to_search: int | None = None, reorder_num_neighbors: int = 400,
               search_fraction: float = 0.15, brute_force_below: int = 1024,
               tree_above: int = 100_000) -> ScannPlan:
    """Chooses tree/AH/reorder parameters for `count` vectors (see the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"unknown ScaNN mode {mode!r}; choose one of {list(MODES)}")
    if mode == "auto":
        if num_leaves is not None or leaves_to_search is not None:
            mode = "tree"  # asking for leaves is asking for a tree
        else:
            mode = "brute_force" if count < brute_force_below else "ah" if count < tree_above else "tree"
    if mode == "brute_force":
        return ScannPlan(mode="brute_force")
    if mode == "ah":
        return ScannPlan(mode="ah", reorder_num_neighbors=reorder_num_neighbors,
                         training_sample_size=min(count, _MAX_TRAINING_SAMPLE))
    if count < 2:
        raise ValueError(f"a ScaNN tree needs at least 2 vectors, got {count}; "
                         "use mode='brute_force'")
    if num_leaves is None:
        num_leaves = max(2, min(round(math.sqrt(count)), count // _MIN_POINTS_PER_LEAF))
    if not 2 <= num_leaves <= count:
        raise ValueError(f"num_leaves must be between 2 and the corpus size {count}, "
                         f"got {num_leaves}")
    if leaves_to_search is None:
        leaves_to_search = max(math.ceil(search_fraction * num_leaves),
                               math.ceil(_MIN_POINTS_TO_SEARCH * num_leaves / count))
        leaves_to_search = min(leaves_to_search, num_leaves)
    if not 1 <= leaves_to_search <= num_leaves:
        raise ValueError(f"leaves_to_search must be between 1 and num_leaves={num_leaves}, got "
                         f"{leaves_to_search}")
    return ScannPlan(mode="tree", num_leaves=num_leaves, leaves_to_search=leaves_to_search,
                     reorder_num_neighbors=reorder_num_neighbors,
                     training_sample_size=min(count, _MAX_TRAINING_SAMPLE))


def scann_builder(vectors: np.ndarray, plan: ScannPlan, dimensions_per_block: int,
                  anisotropic_threshold: float) -> Any:
    """A ScaNN builder for `plan`: brute force, or [tree +] anisotropic hashing; exact
    reordering is left to the caller."""
    # num_neighbors is only the default; every search passes its own k.
    builder = scann.scann_ops_pybind.builder(vectors, 10, "dot_product")
    if plan.mode == "brute_force":
        return builder.score_brute_force()
    if plan.mode == "tree":
        builder = builder.tree(num_leaves=plan.num_leaves,
                               num_leaves_to_search=plan.leaves_to_search,
                               training_sample_size=plan.training_sample_size)
    return builder.score_ah(dimensions_per_block,
                            anisotropic_quantization_threshold=anisotropic_threshold,
                            training_sample_size=plan.training_sample_size)


def load_scann_searcher(source: Path) -> Any:
    """Loads a searcher saved by irjax, reading only files under the names irjax's writer produces.

    An index manifest proves integrity (each file is the one the writer recorded), not
    authenticity: whoever can write the index folder can also re-hash the manifest. So the
    manifest never decides what ScaNN reads. `scann.load_searcher` would unpickle a
    `scann_docids.pkl` (running whatever code it holds) and read any path scann_assets.pbtxt
    names; here the folder may hold only SCANN_FILES as regular files, the asset paths must be
    those names, and the searcher is loaded from a private folder holding the checked asset list
    and links to exactly those files, so nothing placed in `source` later is read either.
    """
    entries = {p.name: p for p in source.iterdir()}
    foreign = sorted(set(entries) - SCANN_FILES)
    if foreign:
        raise IndexIntegrityError(f"{source} holds {foreign}, which irjax's ScaNN writer never "
                                  "produces; remove them (a .pkl would be unpickled) or rebuild")
    odd = sorted(n for n, p in entries.items() if p.is_symlink() or not p.is_file())
    if odd:
        raise IndexIntegrityError(f"{source}: {odd} are not regular files; rebuild the index")
    if "scann_assets.pbtxt" not in entries:
        raise IndexIntegrityError(f"{source} has no scann_assets.pbtxt; rebuild the index")
    assets = entries["scann_assets.pbtxt"].read_text(encoding="utf-8", errors="replace")
    named = _ASSET_PATH.findall(assets)
    bad = sorted({a for a in named if a not in entries or a == "scann_assets.pbtxt"})
    if bad:
        raise IndexIntegrityError(f"{source}/scann_assets.pbtxt names assets {bad} that are not "
                                  "files irjax wrote into this folder; rebuild the index")
    with tempfile.TemporaryDirectory(prefix="irjax_scann_") as private:
        for name, path in entries.items():
            if name != "scann_assets.pbtxt":
                os.symlink(path.resolve(), os.path.join(private, name))
        with open(os.path.join(private, "scann_assets.pbtxt"), "w", encoding="utf-8") as f:
            f.write(assets)  # the text checked above, not whatever the file holds later
        return scann.scann_ops_pybind.load_searcher(private)


@register_index
class ScannIndex(Index):
    """ScaNN searcher; `mode='auto'` picks brute force or a tree from the corpus size."""

    kind = "scann"
    required_files = (f"{SCANN_DIR}/scann_assets.pbtxt", f"{SCANN_DIR}/dataset.npy")

    def __init__(self, metric: str = "dot", mode: str = "auto", num_leaves: int | None = None,
                 leaves_to_search: int | None = None, reorder_num_neighbors: int = 400,
                 search_fraction: float = 0.15, brute_force_below: int = 1024,
                 tree_above: int = 100_000, dimensions_per_block: int = 2,
                 anisotropic_threshold: float = 0.2) -> None:
        super().__init__(metric)
        if mode not in MODES:
            raise ValueError(f"unknown ScaNN mode {mode!r}; choose one of {list(MODES)}")
        if not 0 < search_fraction <= 1:
            raise ValueError(f"search_fraction must be in (0, 1], got {search_fraction}")
        for name, value in (("reorder_num_neighbors", reorder_num_neighbors),
                            ("dimensions_per_block", dimensions_per_block),
                            ("brute_force_below", brute_force_below),
                            ("tree_above", tree_above)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.mode = mode
        self.num_leaves = num_leaves
        self.leaves_to_search = leaves_to_search
        self.reorder_num_neighbors = reorder_num_neighbors
        self.search_fraction = search_fraction
        self.brute_force_below = brute_force_below
        self.tree_above = tree_above
        self.dimensions_per_block = dimensions_per_block
        self.anisotropic_threshold = anisotropic_threshold
        self.plan: ScannPlan | None = None
        self._searcher: Any = None

    def options(self) -> dict[str, Any]:
        return {"mode": self.mode, "num_leaves": self.num_leaves,
                "leaves_to_search": self.leaves_to_search,
                "reorder_num_neighbors": self.reorder_num_neighbors,
                "search_fraction": self.search_fraction,
                "brute_force_below": self.brute_force_below,
                "tree_above": self.tree_above,
                "dimensions_per_block": self.dimensions_per_block,
                "anisotropic_threshold": self.anisotropic_threshold}

    def build_params(self) -> dict[str, Any]:
        assert self.plan is not None
        return dataclasses.asdict(self.plan)

    def _build(self, vectors: np.ndarray) -> None:
        plan = plan_scann(len(vectors), self.mode, self.num_leaves, self.leaves_to_search,
                          self.reorder_num_neighbors, self.search_fraction,
                          self.brute_force_below, self.tree_above)
        builder = scann_builder(vectors, plan, self.dimensions_per_block,
                                self.anisotropic_threshold)
        if plan.mode != "brute_force":
            builder = builder.reorder(plan.reorder_num_neighbors)
        self._searcher = builder.build()
        self.plan = plan

    def _run(self, queries: np.ndarray, k: int,
             leaves: int | None) -> tuple[np.ndarray, np.ndarray]:
        assert self.plan is not None
        kwargs: dict[str, Any] = {"final_num_neighbors": k}
        if self.plan.mode == "tree":
            kwargs["leaves_to_search"] = leaves
        if self.plan.mode in ("tree", "ah"):
            kwargs["pre_reorder_num_neighbors"] = max(self.plan.reorder_num_neighbors, k)
        if len(queries) > _PARALLEL_BATCH:
            rows, scores = self._searcher.search_batched_parallel(
                queries, batch_size=_PARALLEL_BATCH, **kwargs)
        else:
            rows, scores = self._searcher.search_batched(queries, **kwargs)
        return np.asarray(scores, dtype=np.float32), np.asarray(rows, dtype=np.int64)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        assert self.plan is not None
        scores, rows = self._run(queries, k, self.plan.leaves_to_search)
        # ScaNN pads rows whose searched leaves held fewer than k points with NaN scores.
        short = np.flatnonzero(np.isnan(scores).any(axis=1))
        if short.size and self.plan.mode == "tree":
            scores[short], rows[short] = self._run(queries[short], k, self.plan.num_leaves)
        if np.isnan(scores).any():
            raise RuntimeError(f"ScaNN returned fewer than k={k} neighbours even when searching "
                               "every leaf; rebuild with mode='brute_force' or a smaller k")
        order = np.argsort(-scores, axis=1, kind="stable")
        return np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)

    def _save_data(self, directory: Path) -> None:
        target = directory / SCANN_DIR
        target.mkdir()
        # Relative asset paths keep the searcher loadable after the temp dir is renamed.
        self._searcher.serialize(str(target), relative_path=True)

    def _load_data(self, directory: Path, manifest: dict[str, Any]) -> tuple[int, int]:
        source = directory / SCANN_DIR
        listed = {name for name in manifest["files"] if name.startswith(f"{SCANN_DIR}/")}
        unlisted = [p.name for p in source.iterdir() if f"{SCANN_DIR}/{p.name}" not in listed]
        if unlisted:  # files the checksums do not cover (load_scann_searcher says why it matters)
            raise IndexIntegrityError(f"{source} holds files the manifest does not list: "
                                      f"{sorted(unlisted)}; remove them or rebuild the index")
        try:
            self.plan = ScannPlan(**manifest["build_params"])
        except TypeError as e:
            raise IndexIntegrityError(f"manifest build_params are not a ScaNN plan ({e})") from e
        dataset = np.load(source / "dataset.npy", mmap_mode="r", allow_pickle=False)
        if dataset.ndim != 2:
            raise IndexIntegrityError(f"{source / 'dataset.npy'} is not a 2-D array")
        self._searcher = load_scann_searcher(source)
        if self._searcher.size() != dataset.shape[0]:
            raise IndexIntegrityError(f"ScaNN searcher in {source} holds {self._searcher.size()} "
                                      f"points but its dataset.npy has {dataset.shape[0]}")
        return int(dataset.shape[0]), int(dataset.shape[1])
