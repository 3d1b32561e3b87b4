"""Saving and loading: identical results after a round trip, and clear errors for damaged or
mismatched index directories."""
import json
from pathlib import Path

import numpy as np
import pytest

from irjax.files import sha256_file
from irjax.index.base import (IndexIntegrityError, create_index, ids_checksum, load_index,
                              read_manifest)
from irjax.index.exact import ExactIndex
from irjax.index.faiss_index import FaissIndex
from irjax.index.scann_index import ScannIndex

BACKENDS = [
    ("exact", {"corpus_chunk_size": 256}, "vectors.npy"),
    ("scann", {}, "scann/dataset.npy"),  # 600 vectors: brute force
    ("scann", {"mode": "tree"}, "scann/hashed_dataset.npy"),
    ("faiss", {}, "faiss.index"),
    ("faiss", {"structure": "ivf"}, "faiss.index"),
    ("faiss", {"structure": "hnsw"}, "faiss.index"),
]


def _corpus(n: int = 600, d: int = 16) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n + 20, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x[:n], x[n:], [f"doc-{i}" for i in range(n)]


def _saved(tmp_path: Path, kind: str = "exact", **options) -> Path:
    vectors, _, ids = _corpus()
    directory = tmp_path / f"{kind}-index"
    create_index(kind, **options).build(vectors, ids).save(directory)
    return directory


def _edit_manifest(directory: Path, **changes) -> None:
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("kind, options, data_file", BACKENDS)
def test_round_trip_gives_identical_results(tmp_path, kind, options, data_file):
    vectors, queries, ids = _corpus()
    index = create_index(kind, **options).build(vectors, ids)
    before = index.search(queries, 15)
    index.save(tmp_path / "ix")
    loaded = load_index(tmp_path / "ix")
    assert type(loaded) is type(index) and loaded.options() == index.options()
    assert loaded.build_params() == index.build_params()
    assert (len(loaded), loaded.dim, loaded.ids) == (600, 16, ids)
    after = loaded.search(queries, 15)
    np.testing.assert_array_equal(after.indices, before.indices)
    np.testing.assert_array_equal(after.scores, before.scores)
    assert after.ids == before.ids
    manifest = read_manifest(tmp_path / "ix")
    assert data_file in manifest["files"] and "ids.json" in manifest["files"]
    for name, record in manifest["files"].items():
        assert sha256_file(tmp_path / "ix" / name) == record["sha256"]
        assert (tmp_path / "ix" / name).stat().st_size == record["size"]
    assert (manifest["kind"], manifest["count"], manifest["dimension"]) == (kind, 600, 16)
    assert manifest["metric"] == "dot" and manifest["ids_sha256"] == ids_checksum(ids)
    assert manifest["options"] == index.options() and manifest["format_version"] == 1


def test_cosine_metric_survives_a_round_trip(tmp_path):
    vectors, queries, ids = _corpus()
    index = ExactIndex(metric="cosine").build(vectors * 3.0, ids)
    index.save(tmp_path / "ix")
    loaded = ExactIndex.load(tmp_path / "ix")
    assert loaded.metric == "cosine"
    np.testing.assert_array_equal(loaded.search(queries * 2.0, 5).indices,
                                  index.search(queries, 5).indices)


@pytest.mark.parametrize("kind, options, data_file", BACKENDS)
def test_truncated_data_file_names_file_and_sizes(tmp_path, kind, options, data_file):
    directory = _saved(tmp_path, kind, **options)
    path = directory / data_file
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size // 2])
    with pytest.raises(IndexIntegrityError,
                       match=rf"{data_file} is {size // 2} bytes but the manifest expects {size}"):
        load_index(directory)


def test_same_size_corruption_fails_checksum(tmp_path):
    directory = _saved(tmp_path)
    path = directory / "vectors.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IndexIntegrityError, match="vectors.npy fails its sha256 check"):
        ExactIndex.load(directory)


def test_missing_manifest_or_directory(tmp_path):
    directory = _saved(tmp_path)
    (directory / "manifest.json").unlink()
    with pytest.raises(IndexIntegrityError, match="has no manifest.json"):
        load_index(directory)
    with pytest.raises(FileNotFoundError, match="no index directory"):
        load_index(tmp_path / "nowhere")
    (directory / "manifest.json").write_text("{not json")
    with pytest.raises(IndexIntegrityError, match="not valid JSON"):
        load_index(directory)


@pytest.mark.parametrize("data_file", ["vectors.npy", "ids.json"])
def test_missing_data_file(tmp_path, data_file):
    directory = _saved(tmp_path)
    (directory / data_file).unlink()
    with pytest.raises(IndexIntegrityError, match=rf"{data_file} is missing"):
        load_index(directory)


@pytest.mark.parametrize("kind, options, data_file", [BACKENDS[0], BACKENDS[2], BACKENDS[3]])
def test_edited_manifest_count_or_dimension(tmp_path, kind, options, data_file):
    directory = _saved(tmp_path, kind, **options)
    _edit_manifest(directory, count=601)
    with pytest.raises(IndexIntegrityError, match="manifest records 601 vectors"):
        load_index(directory)
    _edit_manifest(directory, count=600, dimension=32)
    with pytest.raises(IndexIntegrityError,
                       match="600 vectors of dimension 32 but the data files hold 600 of "
                             "dimension 16"):
        load_index(directory)
    _edit_manifest(directory, dimension=16, files={})
    with pytest.raises(IndexIntegrityError, match="does not list required file"):
        load_index(directory)


def test_manifest_with_bad_fields(tmp_path):
    directory = _saved(tmp_path)
    _edit_manifest(directory, count="600")
    with pytest.raises(IndexIntegrityError, match="count must be a positive integer"):
        load_index(directory)
    _edit_manifest(directory, count=600, format_version=99)
    with pytest.raises(IndexIntegrityError, match="format version 99"):
        load_index(directory)
    _edit_manifest(directory, format_version=1, options={"corpus_chunk_size": -3})
    with pytest.raises(IndexIntegrityError, match="settings this 'exact' index rejects"):
        load_index(directory)
    files = dict(read_manifest(directory)["files"], **{"../outside": {"sha256": "x", "size": 1}})
    _edit_manifest(directory, options={}, files=files)
    with pytest.raises(IndexIntegrityError, match="illegal file path '../outside'"):
        load_index(directory)


def test_ids_mismatch(tmp_path):
    directory = _saved(tmp_path)
    # ids replaced and the file's checksum in the manifest patched to match: the ids-list checksum
    # still catches it.
    ids_path = directory / "ids.json"
    ids = json.loads(ids_path.read_text())
    ids_path.write_text(json.dumps(ids[::-1]))
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["files"]["ids.json"] = {"sha256": sha256_file(ids_path),
                                     "size": ids_path.stat().st_size}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexIntegrityError, match="does not match the ids checksum"):
        load_index(directory)


def test_expectations_reject_an_intact_but_wrong_index(tmp_path):
    directory = _saved(tmp_path)
    _, _, ids = _corpus()
    loaded = load_index(directory, expected_dim=16, expected_ids_checksum=ids_checksum(ids))
    assert len(loaded) == 600
    with pytest.raises(IndexIntegrityError, match="different document ids"):
        load_index(directory, expected_ids_checksum=ids_checksum(ids[:-1]))
    with pytest.raises(IndexIntegrityError, match="16-dimensional vectors but 768 were expected"):
        load_index(directory, expected_dim=768)
    with pytest.raises(IndexIntegrityError, match="holds a 'exact' index, not 'faiss'"):
        FaissIndex.load(directory)


def test_stray_file_in_scann_directory_is_refused(tmp_path):
    directory = _saved(tmp_path, "scann")
    (directory / "scann" / "scann_docids.pkl").write_bytes(b"not verified")
    with pytest.raises(IndexIntegrityError, match="files the manifest does not list.*docids"):
        ScannIndex.load(directory)


class _Payload:
    """Unpickling this creates the file named in its argument: proof that a pickle was loaded."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _rehash(directory: Path, name: str) -> None:
    """What anyone who can write the index folder can do: list a file with its true checksum."""
    manifest = json.loads((directory / "manifest.json").read_text())
    path = directory / name
    manifest["files"][name] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    (directory / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("kind, folder", [("scann", "scann"), ("scann_sharded", "shard_00000")])
def test_a_rehashed_manifest_cannot_make_scann_unpickle_a_file(tmp_path, kind, folder):
    import pickle
    directory = _saved(tmp_path, kind)
    marker = tmp_path / "code-ran"
    (directory / folder / "scann_docids.pkl").write_bytes(pickle.dumps(_Payload(str(marker))))
    _rehash(directory, f"{folder}/scann_docids.pkl")  # integrity checks now pass
    with pytest.raises(IndexIntegrityError, match=r"\['scann_docids\.pkl'\], which irjax's "
                       "ScaNN writer never produces"):
        load_index(directory)
    assert not marker.exists()


def test_scann_assets_may_only_name_the_writers_files(tmp_path):
    directory = _saved(tmp_path, "scann")
    assets = directory / "scann" / "scann_assets.pbtxt"
    assets.write_text(assets.read_text().replace('"dataset.npy"', '"../../elsewhere.npy"'))
    _rehash(directory, "scann/scann_assets.pbtxt")
    with pytest.raises(IndexIntegrityError, match=r"names assets \['\.\./\.\./elsewhere\.npy'\]"):
        load_index(directory)


def test_save_replaces_old_index_and_failed_save_keeps_it(tmp_path, monkeypatch):
    vectors, queries, ids = _corpus()
    directory = tmp_path / "ix"
    ExactIndex().build(vectors[:100], ids[:100]).save(directory)
    ExactIndex().build(vectors, ids).save(directory)
    assert len(load_index(directory)) == 600

    def explode(self, target):
        (target / "vectors.npy").write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ExactIndex, "_save_data", explode)
    with pytest.raises(OSError, match="disk full"):
        ExactIndex().build(vectors[:50], ids[:50]).save(directory)
    assert len(load_index(directory)) == 600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]
