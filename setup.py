"""Installs irjax; runtime dependencies are pinned in requirements.txt."""
from pathlib import Path

from setuptools import find_packages, setup

requirements = [
    line.split("#")[0].strip()
    for line in Path(__file__).with_name("requirements.txt").read_text().splitlines()
    if line.split("#")[0].strip() and not line.startswith("pytest")
]

setup(
    name="irjax",
    version="0.1.0",
    description="First-stage neural retrieval in JAX/Flax: dual encoders, XTR, generative retrieval.",
    packages=find_packages(include=["irjax", "irjax.*"]),
    python_requires=">=3.11",
    install_requires=requirements,
)
