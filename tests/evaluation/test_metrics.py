"""evaluate_run against pytrec_eval used directly as the reference, on a run built to hit the edge
cases: graded relevance, score ties (also at the rank-10 cut-off), a query with nothing relevant
retrieved, judged queries missing from the run or with an empty ranking, and an unjudged query."""
from __future__ import annotations

import json
from pathlib import Path

import ir_measures
import pytest
import pytrec_eval

from irjax.evaluation.metrics import DEFAULT_MEASURES, EvalResult, evaluate_run, load_per_query, save_per_query

QRELS = {
    # graded; d2 is never retrieved, r11 sits in a tie at ranks 10/11, d5 is found only at rank 40
    "q1": {"d1": 3, "d2": 2, "d3": 1, "d4": 0, "r11": 2, "d5": 1},
    "q2": {"r1": 1, "r2": 2, "x": 0},  # relevant documents exist, none retrieved
    "q3": {"d1": 1},  # judged but absent from the run
    "q4": {"d1": 0, "d2": 0},  # judged, nothing relevant
    "q5": {"b": 1, "a": 0},  # the first relevant document is tied with a non-relevant one
    "q6": {"m": 1},  # the only relevant document is tied at the rank-10 cut-off
    "q7": {"a": 1},  # judged, in the run with an empty ranking
}


def _q1_run() -> dict[str, float]:
    scores = {f"f{i:02d}": 50.0 - i for i in range(3, 60)}  # fillers from rank 4 on (distinct scores)
    scores.update({"d3": 100.0, "d1": 99.0, "d4": 98.0})
    scores.update({"r11": 41.0, "f10": 41.0})  # tie after 9 documents: "r11" > "f10" takes rank 10
    del scores["f09"]  # keep exactly 9 documents above the tie
    scores["d5"] = scores.pop("f40")  # relevant document deep in the ranking
    return scores


RUN = {
    "q1": _q1_run(),
    "q2": {"x": 3.0, "y": 2.0, "z": 2.0},
    "q4": {"d1": 1.0, "d2": 1.0, "d9": 0.5},
    "q5": {"a": 1.0, "b": 1.0, "c": 0.5},
    "q6": {**{f"h{i}": 20.0 - i for i in range(1, 10)}, "a": 1.0, "m": 1.0},
    "q7": {},
    "qX": {"d1": 5.0},  # not judged: must not influence anything
}

TREC_NAMES = {"nDCG@10": "ndcg_cut_10", "R@10": "recall_10", "R@100": "recall_100"}


def _top10(run: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Reference truncation in trec_eval's order: score descending, then doc id descending."""
    return {q: dict(sorted(docs.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:10]) for q, docs in run.items()}


def _reference_per_query() -> dict[str, dict[str, float]]:
    """pytrec_eval per query; queries it does not report (no results) are 0, as trec_eval -c does."""
    main = pytrec_eval.RelevanceEvaluator(QRELS, set(TREC_NAMES.values())).evaluate(RUN)
    # pytrec_eval's recip_rank has no cut-off: RR@10 is recip_rank on the run truncated to 10.
    rr = pytrec_eval.RelevanceEvaluator(QRELS, {"recip_rank"}).evaluate(_top10(RUN))
    reference = {}
    for qid in QRELS:
        row = {name: main.get(qid, {}).get(trec, 0.0) for name, trec in TREC_NAMES.items()}
        row["RR@10"] = rr.get(qid, {}).get("recip_rank", 0.0)
        reference[qid] = row
    return reference


@pytest.fixture(scope="module")
def result() -> EvalResult:
    return evaluate_run(RUN, QRELS)


def test_run_is_shaped_as_intended() -> None:
    ranked = [d for d, _ in sorted(RUN["q1"].items(), key=lambda kv: (kv[1], kv[0]), reverse=True)]
    assert ranked[:3] == ["d3", "d1", "d4"] and ranked[9:11] == ["r11", "f10"] and ranked.index("d5") > 10


def test_per_query_matches_pytrec_eval(result: EvalResult) -> None:
    reference = _reference_per_query()
    assert set(result.per_query) == set(QRELS)
    for qid, row in reference.items():
        assert result.per_query[qid] == pytest.approx(row, abs=1e-12), qid
    # The edge cases really are edge cases (guards against a degenerate fixture).
    assert reference["q1"]["R@10"] == pytest.approx(3 / 5) and reference["q1"]["R@100"] == pytest.approx(4 / 5)
    assert 0 < reference["q1"]["nDCG@10"] < 1 and reference["q1"]["RR@10"] == 1.0
    assert reference["q5"]["RR@10"] == 1.0 and reference["q6"]["RR@10"] == pytest.approx(0.1)
    assert all(v == 0.0 for q in ("q2", "q3", "q4", "q7") for v in result.per_query[q].values())


def test_aggregate_averages_over_every_judged_query(result: EvalResult) -> None:
    reference = _reference_per_query()
    assert tuple(result.aggregate) == DEFAULT_MEASURES
    for name in DEFAULT_MEASURES:
        expected = sum(row[name] for row in reference.values()) / len(QRELS)
        assert result.aggregate[name] == pytest.approx(expected, abs=1e-12), name
    # Averaging only over queries pytrec_eval reports (BEIR's code path) would give more.
    reported = pytrec_eval.RelevanceEvaluator(QRELS, {"ndcg_cut_10"}).evaluate(RUN)
    naive = sum(v["ndcg_cut_10"] for v in reported.values()) / len(reported)
    assert result.aggregate["nDCG@10"] < naive
    assert result.num_judged == 7
    assert result.num_with_results == 5  # q3 is missing, q7 is empty
    assert result.num_unjudged_ignored == 1
    assert result.to_dict()["metrics"] == result.aggregate


def test_ties_rank_the_same_for_every_measure() -> None:
    """ir-measures alone breaks RR ties the other way (MS MARCO code); evaluate_run must not."""
    raw = {m.query_id: m.value for m in ir_measures.iter_calc([ir_measures.RR @ 10], QRELS, RUN)}
    assert raw["q5"] == 0.5 and raw["q6"] == 0.0  # what we would report without canonical ranking
    per_query = evaluate_run(RUN, QRELS, measures=["RR@10"]).per_query
    assert per_query["q5"]["RR@10"] == 1.0 and per_query["q6"]["RR@10"] == pytest.approx(0.1)


def test_unjudged_queries_and_empty_runs_change_nothing(result: EvalResult) -> None:
    without_unjudged = evaluate_run({q: d for q, d in RUN.items() if q != "qX"}, QRELS)
    assert without_unjudged.aggregate == result.aggregate
    empty = evaluate_run({}, QRELS)
    assert empty.num_with_results == 0 and set(empty.aggregate.values()) == {0.0}


def test_perfect_ranking_scores_one() -> None:
    qrels = {"q": {"a": 2, "b": 1, "c": 0}}
    scores = evaluate_run({"q": {"a": 3.0, "b": 2.0, "c": 1.0}}, qrels).aggregate
    assert scores == {"nDCG@10": 1.0, "R@10": 1.0, "R@100": 1.0, "RR@10": 1.0}


def test_other_measures_keep_the_requested_names() -> None:
    out = evaluate_run(RUN, QRELS, measures=("P@5", "AP", "MRR@10"))
    assert tuple(out.aggregate) == ("P@5", "AP", "MRR@10")
    assert out.per_query["q5"]["MRR@10"] == 1.0


@pytest.mark.parametrize(
    "measures, qrels, message",
    [
        (("nDCG@ten",), QRELS, "not an ir-measures measure name"),
        (("nDCG@10", "NDCG@10"), QRELS, "are the same measure"),
        ((), QRELS, "no measures"),
        (DEFAULT_MEASURES, {"q": {"d": 1.5}}, "not an integer"),
        (DEFAULT_MEASURES, {"q": {"d": True}}, "is a bool"),
        (DEFAULT_MEASURES, {"q": {}}, "no judged queries"),
    ],
)
def test_bad_input_is_rejected(measures, qrels, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate_run(RUN, qrels, measures=measures)


def test_save_per_query_jsonl_and_tsv(result: EvalResult, tmp_path: Path) -> None:
    jsonl = save_per_query(result, tmp_path / "out" / "per_query.jsonl")
    lines = jsonl.read_text().splitlines()
    assert [json.loads(line)["query_id"] for line in lines] == sorted(QRELS)
    assert load_per_query(jsonl) == result.per_query

    tsv = save_per_query(result, tmp_path / "per_query.tsv")
    rows = [line.split("\t") for line in tsv.read_text().splitlines()]
    assert rows[0] == ["query_id", *DEFAULT_MEASURES]
    assert {r[0]: [float(v) for v in r[1:]] for r in rows[1:]} == {
        q: [s[m] for m in DEFAULT_MEASURES] for q, s in result.per_query.items()
    }
    with pytest.raises(ValueError, match="jsonl or .tsv"):
        save_per_query(result, tmp_path / "per_query.csv")


def test_load_per_query_names_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"query_id": "q1", "nDCG@10": 0.5}\n{"nDCG@10": 0.1}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: not a per-query score line"):
        load_per_query(path)


def test_results_do_not_depend_on_pythonhashseed(shared_data, tmp_path):
    """The same evaluation in two processes with different string hashing gives identical files.

    Before, queries reached ir-measures in set order, so R@10 on NFCorpus dev came out as
    0.12524418792377412 or ...7741 depending on the seed (float sums in another order)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    outputs = []
    for seed in ("1", "2"):
        workdir = tmp_path / f"seed{seed}"
        env = dict(os.environ, PYTHONHASHSEED=seed, JAX_PLATFORMS="cpu", IRJAX_DATA_DIR=str(shared_data),
                   PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
        proc = subprocess.run([sys.executable, "-m", "irjax.main", "--gin_file=gin/eval/bm25.gin",
                               "--gin.DATA_DIR='nfcorpus'", "--gin.SPLIT='dev'",
                               f"--gin.WORKDIR='{workdir}'"],
                              cwd=root, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        metrics = json.loads((workdir / "metrics.json").read_text())
        del metrics["seconds"], metrics["timings"]  # wall-clock times, not results
        outputs.append((json.dumps(metrics, indent=2), (workdir / "run.trec").read_bytes(),
                        (workdir / "per_query.jsonl").read_bytes()))
    assert outputs[0] == outputs[1]
