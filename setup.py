"""Installs irjax.

install_requires are the top-level runtime pins of requirements.txt; pip resolves their transitive
dependencies freely. The exact, hash-checked set every transitive package included is
requirements.lock, which `make setup` installs (see README "Dependencies"). Test-only pins
(requirements-test.txt) are the `test` extra.
"""
from pathlib import Path

from setuptools import find_packages, setup


def _pins(name: str) -> list[str]:
    """The requirement lines of a requirements file, comments and blank lines dropped."""
    lines = Path(__file__).with_name(name).read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


setup(
    name="irjax",
    version="0.1.0",
    description="First-stage neural retrieval in JAX/Flax: dual encoders, XTR, generative retrieval.",
    packages=find_packages(include=["irjax", "irjax.*"]),
    python_requires=">=3.11",
    install_requires=_pins("requirements.txt"),
    extras_require={"test": _pins("requirements-test.txt")},
)
