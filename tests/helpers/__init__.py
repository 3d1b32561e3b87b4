"""Plain helper modules shared by the test modules (never collected: no test_* names).

Test modules import from here, never from one another: importing a test module runs its
module-level setup a second time under another name and makes pytest's view of it depend on
import order. Shared fixtures live in tests/conftest.py.
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout: tests run scripts and tools from here
