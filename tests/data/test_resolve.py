"""Resolution order, clear not-found errors, and verified atomic downloads from a local file:// zip."""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from irjax.data import resolve
from irjax.data.collection import load_collection
from irjax.data.resolve import BEIR_URLS, DatasetDownloadError, DatasetNotFoundError, resolve_dataset

FILES = {
    "corpus.jsonl": '{"_id": "d1", "title": "T", "text": "hello"}\n',
    "queries.jsonl": '{"_id": "q1", "text": "hi"}\n',
    "qrels/test.tsv": "query-id\tcorpus-id\tscore\nq1\td1\t1\n",
}


def make_dataset(folder: Path) -> Path:
    for rel, text in FILES.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    return folder


def make_zip(path: Path, top: str | None = "toy") -> tuple[str, str]:
    """A BEIR-style zip (files under `top/`); returns its file:// URL and sha256."""
    with zipfile.ZipFile(path, "w") as zf:
        for rel, text in FILES.items():
            zf.writestr(f"{top}/{rel}" if top else rel, text)
    return path.as_uri(), hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def isolated_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the real data dir (unless it asks for shared_data), the user's cache or a stray ./<name>."""
    if "shared_data" not in request.fixturenames:
        monkeypatch.delenv("IRJAX_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IRJAX_CACHE_DIR", str(tmp_path / "env-cache"))


def test_existing_directory_path_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    direct = make_dataset(tmp_path / "direct" / "toy")
    make_dataset(tmp_path / "data" / "toy")
    monkeypatch.setenv("IRJAX_DATA_DIR", str(tmp_path / "data"))
    assert resolve_dataset(direct) == direct.resolve()
    assert resolve_dataset(str(direct)) == direct.resolve()


def test_data_dir_argument_then_env_then_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arg = make_dataset(tmp_path / "arg" / "toy")
    env = make_dataset(tmp_path / "env" / "toy")
    cached = make_dataset(tmp_path / "cache" / "toy")
    monkeypatch.setenv("IRJAX_DATA_DIR", str(tmp_path / "env"))
    assert resolve_dataset("toy", data_dir=str(tmp_path / "arg"), cache_dir=str(tmp_path / "cache")) == arg
    assert resolve_dataset("toy", cache_dir=str(tmp_path / "cache")) == env
    monkeypatch.delenv("IRJAX_DATA_DIR")
    assert resolve_dataset("toy", cache_dir=str(tmp_path / "cache")) == cached
    monkeypatch.setenv("IRJAX_CACHE_DIR", str(tmp_path / "cache"))
    assert resolve_dataset("toy") == cached


def test_not_found_says_where_it_looked_and_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRJAX_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(DatasetNotFoundError) as info:
        resolve_dataset("scifact", cache_dir=str(tmp_path / "cache"))
    message = str(info.value)
    assert str(tmp_path / "data" / "scifact") in message and str(tmp_path / "cache" / "scifact") in message
    assert "IRJAX_DATA_DIR" in message and "download=True" in message and "path" in message
    assert isinstance(info.value, FileNotFoundError)


def test_missing_path_and_empty_name_are_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="not a directory"):
        resolve_dataset(tmp_path / "nope" / "toy")
    with pytest.raises(DatasetNotFoundError, match="empty dataset name"):
        resolve_dataset("")


def test_found_folder_without_required_files_is_reported(tmp_path: Path) -> None:
    (tmp_path / "data" / "toy").mkdir(parents=True)
    (tmp_path / "data" / "toy" / "corpus.jsonl").write_text("")
    with pytest.raises(DatasetNotFoundError) as info:
        resolve_dataset("toy", data_dir=str(tmp_path / "data"))
    assert "missing queries.jsonl" in str(info.value) and "data_dir" in str(info.value)


def test_download_verifies_extracts_and_is_not_refetched(tmp_path: Path) -> None:
    url, digest = make_zip(tmp_path / "toy.zip")
    cache = tmp_path / "cache"
    path = resolve_dataset("toy", cache_dir=str(cache), download=True, url=url, sha256=digest.upper())
    assert path == (cache / "toy").resolve()
    assert {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()} == set(FILES)
    assert sorted(p.name for p in cache.iterdir()) == ["toy"]  # no temporary files left behind
    assert load_collection(path, "test").doc_ids == ["d1"]
    (tmp_path / "toy.zip").unlink()  # a refetch would now fail
    assert resolve_dataset("toy", cache_dir=str(cache), download=True, url=url, sha256=digest) == path


def test_download_with_wrong_sha256_leaves_nothing(tmp_path: Path) -> None:
    url, digest = make_zip(tmp_path / "toy.zip")
    cache = tmp_path / "cache"
    with pytest.raises(DatasetDownloadError) as info:
        resolve_dataset("toy", cache_dir=str(cache), download=True, url=url, sha256="0" * 64)
    assert "sha256 mismatch" in str(info.value) and digest in str(info.value)
    assert list(cache.iterdir()) == []


def test_download_without_checksum_warns_with_digest_and_records_it(tmp_path: Path, caplog) -> None:
    url, digest = make_zip(tmp_path / "flat.zip", top=None)  # files at the zip's top level
    with pytest.warns(UserWarning, match=f"UNVERIFIED DOWNLOAD: .*{digest}"):
        path = resolve_dataset("flat", cache_dir=str(tmp_path / "cache"), download=True, url=url)
    assert (path / "qrels" / "test.tsv").is_file()
    assert "UNVERIFIED DOWNLOAD" in caplog.text  # in the log too, not only as a Python warning
    record = json.loads((path / resolve.DOWNLOAD_RECORD).read_text())
    assert record["sha256"] == digest and record["url"] == url and record["verified"] is False
    assert set(resolve.BEIR_SHA256.values()) == {None}  # none pinned without a trusted download


def test_download_errors_leave_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    not_zip = tmp_path / "junk.zip"
    not_zip.write_bytes(b"not a zip")
    with pytest.raises(DatasetDownloadError, match="not a valid zip"):
        resolve_dataset("junk", cache_dir=str(cache), download=True, url=not_zip.as_uri(),
                        sha256=hashlib.sha256(b"not a zip").hexdigest())
    wrong = tmp_path / "wrong.zip"
    with zipfile.ZipFile(wrong, "w") as zf:
        zf.writestr("toy/readme.txt", "no corpus here")
    with pytest.raises(DatasetDownloadError, match="not a BEIR zip"):
        resolve_dataset("wrong", cache_dir=str(cache), download=True, url=wrong.as_uri(),
                        sha256=hashlib.sha256(wrong.read_bytes()).hexdigest())
    with pytest.raises(DatasetDownloadError, match="could not download"):
        resolve_dataset("gone", cache_dir=str(cache), download=True, url=(tmp_path / "gone.zip").as_uri())
    assert list(cache.iterdir()) == []


def test_unknown_name_without_url_cannot_download(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="no download URL known"):
        resolve_dataset("toy", cache_dir=str(tmp_path / "cache"), download=True)


def test_beir_urls_and_default_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert BEIR_URLS["scifact"] == "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/scifact.zip"
    assert "nfcorpus" in BEIR_URLS and "cranfield" not in BEIR_URLS
    assert resolve.default_cache_dir() == tmp_path / "env-cache"
    monkeypatch.delenv("IRJAX_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve.default_cache_dir() == tmp_path / "home" / ".cache" / "irjax" / "datasets"


def test_real_data_resolves_through_irjax_data_dir(shared_data: Path) -> None:
    assert resolve_dataset("cranfield") == (shared_data / "cranfield").resolve()
