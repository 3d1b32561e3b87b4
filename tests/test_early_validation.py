"""Settings are checked before any work: a wrongly typed binding when the config is parsed, a
choice-valued setting (index kind, objective, sampler, ...) before any data is read; each error
names the parameter and what it accepts."""
from __future__ import annotations

import time

import gin
import pytest

from irjax import gin_config
from irjax.choices import InvalidChoiceError
from irjax.workdir import read_status

pytestmark = pytest.mark.usefixtures("clean_gin")


@pytest.fixture
def no_data(monkeypatch):
    """Any attempt to find or read a collection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"data was read: {args}")

    monkeypatch.setattr("irjax.data.resolve.resolve_dataset", refuse)
    monkeypatch.setattr("irjax.data.resolve.load_collection", refuse)


@pytest.mark.parametrize("binding, message", [
    ("BM25Retriever.k1 = 'high'", "BM25Retriever.k1 = 'high': expected float, got str"),
    ("evaluate_retriever.top_k = 10.5", "evaluate_retriever.top_k = 10.5: expected int, got float"),
    ("evaluate_retriever.top_k = True", "expected int, got bool"),
    ("SPLIT = 3", "evaluate_retriever.split = %SPLIT (= 3): expected str, got int"),
    ("evaluate_retriever.data_dir = ['a']", "evaluate_retriever.data_dir = ['a']: expected str | None"),
])
def test_wrongly_typed_bindings_fail_when_parsed_naming_the_parameter(binding, message):
    with pytest.raises(gin_config.GinConfigError, match="wrongly typed") as error:
        gin_config.parse(["gin/eval/bm25.gin"], ["WORKDIR='unused'", binding])
    assert message in str(error.value)


def test_typed_bindings_accept_what_the_configs_use():
    gin_config.parse(["gin/train/minilm_scifact.gin"], [
        "WORKDIR='unused'", "TrainerConfig.mesh_shape = (2, 1)",
        "OptimizerConfig.clip_norm = None", "TrainerConfig.num_epochs = 2",
        "train_dual_encoder.data = @DataConfig()"])
    with pytest.raises(gin_config.GinConfigError, match=r"mesh_shape = \(2, '1'\): expected "
                       r"tuple\[int, int\]"):
        gin.clear_config()
        gin_config.parse(["gin/train/minilm_scifact.gin"], [
            "WORKDIR='unused'", "TrainerConfig.mesh_shape = (2, '1')"])
    with pytest.raises(gin_config.GinConfigError, match=r"OptimizerConfig.decay = 'exp': expected "
                       r"Literal\['cosine', 'linear', 'constant'\]"):
        gin.clear_config()
        gin_config.parse(["gin/train/minilm_scifact.gin"], [
            "WORKDIR='unused'", "OptimizerConfig.decay = 'exp'"])
    with pytest.raises(gin_config.GinConfigError, match="expected DataConfig, got an instance "
                       "of BM25Retriever"):
        gin.clear_config()
        gin_config.parse(["gin/train/minilm_scifact.gin"], [
            "WORKDIR='unused'", "train_dual_encoder.data = @BM25Retriever()"])


@pytest.mark.parametrize("gin_file, binding, message", [
    ("gin/eval/minilm.gin", "INDEX = 'nonsense'",
     "DenseRetriever.index='nonsense' is not a valid choice; choose one of ['bebr', 'compressed', "
     "'exact', 'faiss', 'pq_codes', 'scann', 'scann_sharded']"),
    ("gin/eval/minilm.gin", "DenseRetriever.index_options = {'mode': 'fast'}",
     "DenseRetriever.index_options={'mode': 'fast'} for a 'scann' index: unknown ScaNN mode"),
    ("gin/eval/bm25.gin", "BM25Retriever.method = 'okapi'", "unknown BM25 method 'okapi'"),
    ("gin/train/minilm_scifact.gin", "train_dual_encoder.objective = 'triplet'",
     "train_dual_encoder.objective='triplet' is not a valid choice; choose one of ['contrastive', "
     "'margin_mse', 'contrastive+margin_mse']"),
    ("gin/train/minilm_scifact.gin", "train_dual_encoder.negatives = 'all'",
     "train_dual_encoder.negatives='all' is not a valid choice; choose one of ['global', 'local']"),
    ("gin/train/minilm_scifact.gin", "DataConfig.sampler = 'tas'",
     "DataConfig.sampler='tas' is not a valid choice; choose one of ['random', 'tas_balanced']"),
    ("gin/train/xtr_scifact.gin", "train_multi_vector.eval_mode = 'colbert'",
     "train_multi_vector.eval_mode='colbert' is not a valid choice; choose one of ['maxsim', 'xtr']"),
    ("gin/train/xtr_scifact.gin", "train_multi_vector.objective = 'maxsim'",
     "train_multi_vector.objective='maxsim' is not a valid choice; choose one of ['xtr', 'colbert']"),
    ("gin/train/dsi_scifact.gin", "train_dsi.docid_scheme = 'hierarchical'",
     "train_dsi.docid_scheme='hierarchical' is not a valid choice; choose one of ['atomic', "
     "'naive_string', 'semantic']"),
    ("gin/train/dsi_scifact.gin", "train_dsi.t5_preset = 'huge'", "train_dsi.t5_preset='huge'"),
    ("gin/train/dsi_continual_scifact.gin", "continual_dsi.docid_scheme = 'x'",
     "continual_dsi.docid_scheme='x' is not a valid choice"),
    ("gin/train/splade_scifact.gin", "train_splade.query_side = 'bm25'",
     "train_splade.query_side='bm25' is not a valid choice; choose one of ['splade', 'idf']"),
    ("gin/eval/splade_tiny.gin", "INDEX = 'lucene'",
     "splade_retriever.index='lucene' is not a valid choice; choose one of ['exact', 'seismic']"),
    ("gin/train/qg_scifact.gin", "QuerySampling.num_queries_per_doc = 0",
     "QuerySampling.num_queries_per_doc=0 must be >= 1"),
])
def test_invalid_choices_fail_in_seconds_before_any_data_is_read(tmp_path, no_data, gin_file,
                                                                  binding, message):
    start = time.perf_counter()
    gin_config.parse([gin_file], [f"WORKDIR='{tmp_path / 'w'}'", binding])
    with pytest.raises(ValueError) as error:
        gin_config.run_job()
    assert time.perf_counter() - start < 5
    assert message in str(error.value)
    assert read_status(tmp_path / "w")["state"] == "failed"


def test_choice_errors_are_their_own_type():
    from irjax.retrieval.dense import DenseRetriever

    with pytest.raises(InvalidChoiceError, match=r"DenseRetriever\.index='ann'"):
        DenseRetriever(encoder=None, index="ann")
