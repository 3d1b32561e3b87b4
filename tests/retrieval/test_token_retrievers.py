"""XTR through a token index, MaxSim over its candidates, and MUVERA, checked against the
exhaustive `MaxSimRetriever` on a tiny collection with a randomly initialised token encoder."""
import json

import jax
import pytest

from irjax.data.collection import load_collection
from irjax.data.tokenization import WordPieceTokenizer
from irjax.retrieval.multi_vector import MaxSimRetriever
from irjax.evaluation.multi_vector_study import candidates_needed, study_multi_vector
from irjax.retrieval.token_retrievers import MuveraRetriever, XtrIndexRetriever
from irjax.index.fde import FDEConfig
from irjax.models.bert import BertConfig
from irjax.models.multi_vector import MultiVectorModel
from irjax.models.pretrained import load_checkpoint
from tests.helpers.tiny_collection import DOCS, TEST, TRAIN, write_collection


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    collection = load_collection(write_collection(tmp_path_factory.mktemp("tiny")), "test")
    checkpoint = load_checkpoint()
    config = BertConfig.from_json(checkpoint.config_path)
    tokenizer = WordPieceTokenizer(checkpoint.directory)
    model = MultiVectorModel(config, dim=16)
    ids = tokenizer.encode(["a b"], 8)
    params = model.init_variables(jax.random.PRNGKey(0), {"pos_ids": ids.ids, "pos_mask": ids.mask})
    base = MaxSimRetriever(model, params, tokenizer, doc_max_length=32, query_max_length=16,
                           batch_size=4, mode="maxsim")
    queries = {q: text for q, (text, _) in {**TRAIN, **TEST}.items()}
    return collection, base, queries


def _ranked(run):
    return {q: list(docs.items()) for q, docs in run.items()}


def _assert_same_runs(a, b):
    for query in a:
        assert [d for d, _ in sorted(a[query].items(), key=lambda x: -x[1])] == \
               [d for d, _ in sorted(b[query].items(), key=lambda x: -x[1])]
        assert [a[query][d] for d in a[query]] == pytest.approx([b[query][d] for d in a[query]],
                                                                abs=1e-5)


def test_every_path_equals_exhaustive_maxsim_when_nothing_is_pruned(setup):
    collection, base, queries = setup
    exhaustive = base.retrieve(collection, queries, k=len(DOCS))
    encodings = base.timings["encode_corpus_s"]
    xtr = XtrIndexRetriever(base, k_prime=10_000, index_kind="exact", chunk_docs=4)
    _assert_same_runs(xtr.retrieve(collection, queries, k=len(DOCS)), exhaustive)
    rerank = xtr.scored_by("maxsim")
    _assert_same_runs(rerank.retrieve(collection, queries, k=len(DOCS)), exhaustive)
    muvera = MuveraRetriever(base, fde=FDEConfig(dim=16, num_repetitions=4,
                                                 num_simhash_projections=2),
                             num_candidates=len(DOCS))
    _assert_same_runs(muvera.retrieve(collection, queries, k=len(DOCS)), exhaustive)
    # The corpus was encoded once: later paths reused the cached token vectors.
    assert base.timings["encode_corpus_s"] == encodings
    assert xtr.cost["candidates_per_query"] == len(DOCS)
    assert rerank.cost["scoring_flops"] > xtr.cost["scoring_flops"] > 0


def test_small_k_prime_prunes_candidates_and_imputes(setup):
    collection, base, queries = setup
    xtr = XtrIndexRetriever(base, k_prime=1, index_kind="exact")
    run = xtr.retrieve(collection, queries, k=len(DOCS))
    # One token per query token: at most n_q candidates, each scored from retrieved tokens only.
    for query, vectors in zip(queries, base.query_vectors(queries)):
        assert 1 <= len(run[query]) <= len(vectors)
    assert xtr.cost["candidates_per_query"] < len(DOCS)


def test_muvera_keeps_only_its_candidates(setup):
    collection, base, queries = setup
    muvera = MuveraRetriever(base, fde=FDEConfig(dim=16, num_repetitions=2,
                                                 num_simhash_projections=2), num_candidates=2)
    run = muvera.retrieve(collection, queries, k=len(DOCS))
    assert all(len(docs) == 2 for docs in run.values())


def test_candidates_needed_reads_the_curve():
    curve = [{"candidates": 10, "recall": 0.5}, {"candidates": 20, "recall": 0.85},
             {"candidates": 50, "recall": 0.97}]
    assert candidates_needed(curve, 0.8) == 20
    assert candidates_needed(curve, 0.95) == 50
    assert candidates_needed(curve, 0.99) is None


def test_study_writes_every_path_and_the_cost_comparison(setup, tmp_path):
    collection, base, _ = setup
    study = study_multi_vector(collection, base, tmp_path, k_prime=10_000,
                               token_index_kind="exact", muvera_candidates=(2, len(DOCS)),
                               fde=FDEConfig(dim=16, num_repetitions=2,
                                             num_simhash_projections=2),
                               include_xtr_exact=True, truth_depth=2)
    assert set(study["paths"]) == {"maxsim", "xtr_bruteforce", "xtr_exact", "xtr_exact_maxsim",
                                   "muvera_2", f"muvera_{len(DOCS)}"}
    for path in study["paths"]:
        assert (tmp_path / path / "metrics.json").exists()
    # Nothing pruned: every path scores like exhaustive MaxSim.
    assert study["paths"]["xtr_exact"] == pytest.approx(study["paths"]["maxsim"])
    assert study["paths"]["xtr_bruteforce"] == pytest.approx(study["paths"]["maxsim"])
    assert study["paths"][f"muvera_{len(DOCS)}"] == pytest.approx(study["paths"]["maxsim"])
    assert study["cost"]["flops_ratio"] > 1
    curves = study["candidates"]
    assert curves["muvera_fde"][-1]["recall"] == pytest.approx(1.0)   # all docs are candidates
    assert curves["xtr_ranked"][-1]["recall"] == pytest.approx(1.0)
    assert json.loads((tmp_path / "study.json").read_text())["dataset"] == collection.name
    assert "fewer" in (tmp_path / "study.md").read_text()
