"""Strings JSON can spell but that are not text (lone surrogates, NUL) are refused where they enter,
with file:line and field, so no later stage (pytrec_eval, tokenizers) crashes on them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from irjax.data.collection import CollectionError, load_collection
from irjax.data.runs import format_trec_run, read_trec_qrels, read_trec_run
from irjax.data.text import text_problem
from irjax.evaluation.metrics import evaluate_run

from tests.helpers.collection_files import DOCS, QRELS, QUERIES, write_collection

ROOT = Path(__file__).resolve().parents[2]
SURROGATE = '"\\ud800"'  # JSON text for a lone high surrogate
NUL = '"\\u0000"'


def _jsonl_with(rows: list[dict], row: int, key: str, raw_value: str) -> str:
    """JSONL of `rows` with rows[row][key] replaced by a raw JSON string literal."""
    lines = [json.dumps(r) for r in rows]
    obj = dict(rows[row])
    obj[key] = "@@"
    lines[row] = json.dumps(obj).replace('"@@"', raw_value)
    return "".join(line + "\n" for line in lines)


def test_text_problem_accepts_real_text_and_names_the_position():
    assert text_problem("caf\u00e9 \U0001F600 \u2028") is None  # paired surrogates decode fine
    assert "lone UTF-16 surrogate (\\ud800) at character 3" in text_problem("abc\ud800")
    assert "NUL character" in text_problem("a\x00b")
    assert text_problem(json.loads('"\\ud83d\\ude00"')) is None


@pytest.mark.parametrize("file, row, key, raw, line", [
    ("corpus.jsonl", 1, "_id", SURROGATE, 2),
    ("corpus.jsonl", 0, "title", SURROGATE, 1),
    ("corpus.jsonl", 2, "text", '"abc \\udfff def"', 3),
    ("corpus.jsonl", 3, "text", NUL, 4),
    ("queries.jsonl", 1, "_id", SURROGATE, 2),
    ("queries.jsonl", 0, "text", '"what \\ud800 is"', 1),
])
def test_surrogates_and_nul_in_collections_name_file_line_and_field(tmp_path, file, row, key,
                                                                    raw, line):
    rows = DOCS if file == "corpus.jsonl" else QUERIES
    content = _jsonl_with(rows, row, key, raw)
    root = write_collection(tmp_path / "c", **{file.split(".")[0]: content})
    with pytest.raises(CollectionError) as error:
        load_collection(root, "test")
    assert str(error.value).startswith(f"{root / file}:{line}: field '{key}': contains a ")


def test_nul_in_qrels_names_file_line_and_column(tmp_path):
    root = write_collection(tmp_path / "c", qrels=QRELS + "q2\td\x004\t1\n")
    with pytest.raises(CollectionError, match=r"test\.tsv:5: field 'corpus-id': contains a NUL"):
        load_collection(root, "test")


def test_runs_and_qrels_files_and_in_memory_runs_are_checked(tmp_path):
    run_path = tmp_path / "run.trec"
    run_path.write_text("q1 Q0 d1 1 2.0 t\nq1 Q0 d\x002 2 1.0 t\n")
    with pytest.raises(ValueError, match=r"run\.trec:2: field 'd\\x002': contains a NUL"):
        read_trec_run(run_path)
    qrels_path = tmp_path / "qrels.txt"
    qrels_path.write_text("q\x001 0 d1 1\n")
    with pytest.raises(ValueError, match=r"qrels\.txt:1: .*NUL"):
        read_trec_qrels(qrels_path)
    with pytest.raises(ValueError, match="surrogate"):
        format_trec_run({"q1": {"d\ud800": 1.0}})
    # evaluate_run refuses what pytrec_eval would crash on (a segmentation fault before)
    with pytest.raises(ValueError, match=r"run: query 'q1', document 'd\\ud800': contains a lone"):
        evaluate_run({"q1": {"d\ud800": 1.0, "d1": 0.5}}, {"q1": {"d1": 1}})


def test_bm25_run_on_a_surrogate_doc_id_fails_with_file_and_line_not_a_segfault(tmp_path):
    docs = [dict(d) for d in DOCS]
    root = write_collection(tmp_path / "c", corpus=_jsonl_with(docs, 1, "_id", '"d2\\ud800"'),
                            qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, "-m", "irjax.main", "--gin_file=gin/eval/bm25.gin",
         f"--gin.DATA_DIR='{root}'", f"--gin.WORKDIR='{tmp_path / 'w'}'"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.returncode  # a user error; 139 (SIGSEGV) before
    assert f"{root / 'corpus.jsonl'}:2: field '_id': contains a lone UTF-16 surrogate" in proc.stderr
