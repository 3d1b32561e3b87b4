"""The real-weight LM tests' shared preamble: the fetched weights (irjax.models.weights_dir) and the
reference fixture made by tools/make_lm_reference.py, or a skip naming what is missing."""
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from irjax.models.weights_dir import weights_dir

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lm"


def weights_and_fixture(name: str, weights_file: str) -> tuple[Path, Any, dict]:
    """(the model's directory, the .npz reference arrays, the .json reference facts) for `name`;
    skips when the fixture or `weights_file` inside the fetched directory is absent."""
    fixture, info = FIXTURES / f"{name}.npz", FIXTURES / f"{name}.json"
    directory = weights_dir(name, must_exist=False)
    if not fixture.exists() or not info.exists():
        pytest.skip(f"no reference fixture {fixture} (tools/make_lm_reference.py {name})")
    if not (directory / weights_file).exists():
        pytest.skip(f"weights {directory / weights_file} absent: run tools/fetch_weights.py {name} "
                    "(or set IRJAX_WEIGHTS_DIR)")
    return directory, np.load(fixture), json.loads(info.read_text())
