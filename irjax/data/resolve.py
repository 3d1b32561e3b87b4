"""Turns a dataset name or path into a local BEIR folder, downloading it only when asked.

Experiments name datasets ("scifact") so configs stay portable across machines; this module decides
where that name lives. Order: (1) an existing directory path, (2) `data_dir` or $IRJAX_DATA_DIR,
(3) the download cache (`cache_dir`, $IRJAX_CACHE_DIR or ~/.cache/irjax/datasets), (4) a download
into that cache when `download=True`. Downloads are verified (sha256 when known) and land
atomically, so an interrupted or corrupt fetch never leaves a folder that looks complete.

No BEIR checksum is pinned (`BEIR_SHA256` is None for every dataset): BEIR publishes md5 sums
only, and a sha256 can be pinned honestly only by someone who has downloaded the zip from the
source, which the machines irjax was developed on could not do. Rather than invent values, an
unverified download warns loudly (logger and `warnings`) with the sha256 it computed and writes
it into the dataset folder as `irjax_download.json` (`{"url", "sha256", "verified": false, ...}`);
compare it with a trusted copy, then pin it here or pass `sha256=...`.

A URI (gs://bucket/scifact: irjax/paths.py) is taken as the dataset folder as it is, and a URI
in `data_dir` / $IRJAX_DATA_DIR is a remote folder of dataset folders; both are read in place.
Downloads always land in the local cache.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path

from irjax.data.collection import Collection, load_collection
from irjax.errors import MissingFileError, UserError
from irjax.files import atomic_directory, atomic_write_text
from irjax.paths import AnyPath, as_path, is_uri

logger = logging.getLogger(__name__)

_BEIR_BASE = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets"
_BEIR_NAMES = ("arguana", "climate-fever", "cqadupstack", "dbpedia-entity", "fever", "fiqa", "hotpotqa",
               "msmarco", "nfcorpus", "nq", "quora", "scidocs", "scifact", "trec-covid", "webis-touche2020")
BEIR_URLS: dict[str, str] = {name: f"{_BEIR_BASE}/{name}.zip" for name in _BEIR_NAMES}
# BEIR publishes md5 sums only; a sha256 goes here once verified against a trusted copy (None:
# download unverified, digest warned about and recorded; see the module docstring). Never guess one.
BEIR_SHA256: dict[str, str | None] = {name: None for name in _BEIR_NAMES}
REQUIRED_FILES = ("corpus.jsonl", "queries.jsonl")
DOWNLOAD_RECORD = "irjax_download.json"
_CHUNK = 1 << 20


class DatasetNotFoundError(MissingFileError):
    """No usable dataset folder; the message says where it looked and how to fix it."""


class DatasetDownloadError(RuntimeError, UserError):
    """A download failed, did not match its sha256, or was not a BEIR zip; nothing was kept.

    A UserError although the network may be to blame: every fix is the user's (check the URL, name
    or checksum, retry, or download by hand and set IRJAX_DATA_DIR, as the message says), and a
    traceback through urllib would help with none of them."""


def default_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where downloaded datasets live: the argument, else $IRJAX_CACHE_DIR, else ~/.cache/irjax/datasets."""
    chosen = cache_dir or os.environ.get("IRJAX_CACHE_DIR") or Path.home() / ".cache" / "irjax" / "datasets"
    return Path(chosen).expanduser()


def _missing_files(folder: AnyPath) -> list[str]:
    return [name for name in REQUIRED_FILES if not (folder / name).is_file()]


def _folder(text: str) -> AnyPath:
    """A local folder (`~` expanded) or a remote one, named by a path or a URI."""
    return as_path(text) if is_uri(text) else Path(text).expanduser()


def _checked(folder: AnyPath, how: str) -> AnyPath:
    """A found folder must be a BEIR collection; a broken one is reported rather than skipped."""
    missing = _missing_files(folder)
    if missing:
        raise DatasetNotFoundError(
            f"{folder} (found via {how}) is not a BEIR collection: missing {', '.join(missing)}; it needs "
            f"{' and '.join(REQUIRED_FILES)} plus qrels/<split>.tsv. Fix or remove that folder.")
    return folder.resolve() if isinstance(folder, Path) else folder


def _is_plain_name(text: str) -> bool:
    return bool(text) and text not in (".", "..") and "/" not in text and os.sep not in text


def resolve_dataset(name_or_path: str | os.PathLike, *, data_dir: str | None = None, cache_dir: str | None = None,
                    download: bool = False, url: str | None = None, sha256: str | None = None
                    ) -> AnyPath:
    """Absolute path of a BEIR folder holding corpus.jsonl and queries.jsonl (see module doc for order)."""
    text = os.fspath(name_or_path)
    if not text.strip():
        raise DatasetNotFoundError("empty dataset name; pass a dataset name such as 'scifact' or a folder path")
    if is_uri(text):  # a remote folder, taken as it is
        if not as_path(text).is_dir():
            raise DatasetNotFoundError(f"dataset folder {text} does not exist (or is not a folder); "
                                       "pass the URI of a folder holding corpus.jsonl, "
                                       "queries.jsonl and qrels/<split>.tsv")
        return _checked(as_path(text), "the URI given")
    looked: list[str] = []
    if Path(text).expanduser().is_dir():
        return _checked(Path(text).expanduser(), "the path given")
    looked.append(f"{Path(text).expanduser().absolute()} (as a path: not a directory)")
    if not _is_plain_name(text):
        raise DatasetNotFoundError(f"dataset path {text!r} is not a directory; pass an existing folder "
                                   "holding corpus.jsonl and queries.jsonl, or a plain dataset name")
    name = text

    root = data_dir or os.environ.get("IRJAX_DATA_DIR")
    source = "data_dir" if data_dir else "$IRJAX_DATA_DIR"
    if root:
        candidate = _folder(root) / name
        if candidate.is_dir():
            return _checked(candidate, source)
        looked.append(f"{candidate} ({source})")
    else:
        looked.append("$IRJAX_DATA_DIR (not set)")

    cache = default_cache_dir(cache_dir)
    if (cache / name).is_dir():
        return _checked(cache / name, "the download cache")
    looked.append(f"{cache / name} (download cache)")

    if download:
        return _download(name, cache, url, sha256)
    known = f" ({name!r} is a known BEIR dataset)" if name in BEIR_URLS else ""
    raise DatasetNotFoundError(
        f"dataset {name!r} not found; looked in: {'; '.join(looked)}. To fix: set IRJAX_DATA_DIR to a "
        f"folder containing {name}/, pass the dataset folder's path, or call with download=True{known}.")


def _fetch(url: str, destination: Path) -> str:
    """Streams `url` into `destination` and returns its sha256, so large zips never sit in memory."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(destination, "wb") as out:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError) as e:
        raise DatasetDownloadError(f"could not download {url}: {e}; check the URL and network, or "
                                   "download and unzip it yourself and set IRJAX_DATA_DIR") from e
    return digest.hexdigest()


def _collection_root(extracted: Path, url: str) -> Path:
    """BEIR zips hold a single `<name>/` folder; a zip with the files at its top level is accepted too."""
    if not _missing_files(extracted):
        return extracted
    folders = [p for p in extracted.iterdir() if p.is_dir() and p.name != "__MACOSX"]
    if len(folders) == 1 and not _missing_files(folders[0]):
        return folders[0]
    found = sorted(p.name for p in extracted.iterdir())
    raise DatasetDownloadError(f"{url} is not a BEIR zip: expected one top folder with "
                               f"{' and '.join(REQUIRED_FILES)}, found {found}")


def _download(name: str, cache: Path, url: str | None, sha256: str | None) -> Path:
    if url is None:
        if name not in BEIR_URLS:
            raise DatasetNotFoundError(f"no download URL known for {name!r}; pass url=... or use one of "
                                       f"the BEIR datasets {sorted(BEIR_URLS)}")
        url = BEIR_URLS[name]
    expected = (sha256 or BEIR_SHA256.get(name) or "").lower() or None
    cache.mkdir(parents=True, exist_ok=True)
    fd, archive_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".zip.part", dir=cache)
    os.close(fd)
    archive = Path(archive_name)
    try:
        logger.info("downloading %s from %s", name, url)
        actual = _fetch(url, archive)
        if expected is not None and actual != expected:
            raise DatasetDownloadError(f"sha256 mismatch for {url}: expected {expected}, got {actual}; "
                                       "the download was deleted. Retry, or check the checksum you passed.")
        if expected is None:
            message = (f"UNVERIFIED DOWNLOAD: {url} has no pinned sha256, so its integrity was "
                       f"not checked; its sha256 is {actual} (recorded in {cache / name}/"
                       f"{DOWNLOAD_RECORD}). Compare it with a trusted copy, then pass sha256=... "
                       "or pin it in irjax/data/resolve.py BEIR_SHA256")
            logger.warning("%s", message)
            warnings.warn(message, stacklevel=3)
        target = cache / name
        try:
            with atomic_directory(target) as staging:
                with zipfile.ZipFile(archive) as zf:
                    zf.extractall(staging / ".unzipped")
                top = _collection_root(staging / ".unzipped", url)
                for child in top.iterdir():
                    os.replace(child, staging / child.name)
                shutil.rmtree(staging / ".unzipped")
                if expected is None:
                    atomic_write_text(staging / DOWNLOAD_RECORD, json.dumps({
                        "url": url, "sha256": actual, "verified": False,
                        "downloaded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                        indent=2) + "\n")
        except zipfile.BadZipFile as e:
            raise DatasetDownloadError(f"{url} is not a valid zip file ({e}); nothing was kept") from e
    finally:
        with contextlib.suppress(FileNotFoundError):
            archive.unlink()
    logger.info("dataset %s ready at %s", name, target)
    return target.resolve()


def open_collection(dataset: str, split: str, data_dir: str | None = None,
                    download: bool = False, streamed: bool = False,
                    max_documents: int | None = None) -> Collection:
    """The `split` of a dataset name or folder, resolved as above, with its load report logged;
    `streamed` keeps the corpus on disk (see `load_collection`)."""
    path = resolve_dataset(dataset, data_dir=data_dir, download=download)
    collection = load_collection(path, split, streamed=streamed, max_documents=max_documents)
    summary = collection.report.summary()
    if summary:
        logger.info("loading %s/%s:\n%s", collection.name, split, summary)
    return collection
