"""The generate_queries job end to end on the six-document collection, with a tiny random
DecoderLM (character tokenizer) in place of the GGUF model: plan, generation, round-trip filter,
pairs, DSI pseudo queries, resumption and refusal of damaged stages; and the generated pairs
feeding DataConfig."""
import dataclasses
import json

import pytest

from irjax.data.collection import load_collection
from irjax.data.fewshot_prompts import FewShotPrompt, PromptConfig
from irjax.data.training_examples import build_training_pairs
from irjax.decoding.lm_query_generation import LMQueryGenerator, SamplingConfig
from irjax.errors import ConfigError, InputFileError
from irjax.jobs import generate_queries as job
from irjax.jobs.pair_data import DataConfig, collect_pairs
from irjax.jobs.train_dsi import read_pseudo_queries
from irjax.models.decoder_lm import DecoderLM
from irjax.models.lm_import import config_from_hf, convert_state_dict
from tests.helpers.char_tokenizer import SPECIAL, VOCAB_SIZE, char_tokenizer
from tests.helpers.tiny_collection import DOCS, TRAIN, write_collection
from tests.helpers.tiny_lm import LLAMA, random_checkpoint


def tiny_generator_factory(calls):
    cfg = dict(LLAMA, vocab_size=VOCAB_SIZE)
    config = config_from_hf(cfg)
    params = convert_state_dict(random_checkpoint(cfg, seed=3), config)

    def from_gguf(path, prompt_config, examples, sampling, chat=None):
        calls.append(path)
        prompt_config = dataclasses.replace(prompt_config, chat=chat or "chatml")
        prompt = FewShotPrompt(prompt_config, examples, char_tokenizer(), "You write queries.")
        return LMQueryGenerator(DecoderLM(config), params, char_tokenizer(), SPECIAL, prompt,
                                sampling, name="tiny")
    return from_gguf


def run_job(data, workdir, **overrides):
    settings = dict(lm="tiny.gguf", plan=job.PlanConfig(num_examples=2, num_clusters=3),
                    prompt=PromptConfig(doc_max_tokens=24, query_max_tokens=12),
                    sampling=SamplingConfig(queries_per_document=2, batch_size=4,
                                            max_new_tokens=6, seed=1),
                    documents_per_part=2, filter_depth=6, samples=5, finetune=False)
    settings.update(overrides)
    return job.generate_queries(str(data), str(workdir), **settings)


def test_generation_filter_pairs_and_resumption(tmp_path, monkeypatch):
    monkeypatch.setenv("IRJAX_CACHE_DIR", str(tmp_path / "cache"))
    calls = []
    monkeypatch.setattr(LMQueryGenerator, "from_gguf", staticmethod(tiny_generator_factory(calls)))
    data = write_collection(tmp_path / "tiny")
    workdir = tmp_path / "work"
    summary = run_job(data, workdir)

    plan = [json.loads(line) for line in (workdir / "plan.jsonl").read_text().splitlines()]
    examples = [r for r in plan if r["role"] == "example"]
    targets = [r["doc_id"] for r in plan if r["role"] == "document"]
    assert len(examples) == 2 and len({r["cluster"] for r in examples}) == 2  # distinct clusters
    assert all(r["query"] == TRAIN_QUERY[r["doc_id"]] for r in examples)
    assert sorted(targets + [r["doc_id"] for r in examples]) == sorted(DOCS)

    filtered = [json.loads(line) for line in (workdir / "filtered.jsonl").read_text().splitlines()]
    assert [r["doc_id"] for r in filtered] == [d for d in targets for _ in range(2)]
    assert {r["sample"] for r in filtered} == {0, 1}
    for row in filtered:  # depth 6 = the whole corpus: every non-empty query is kept
        assert row["kept"] == bool(row["query"]) and (row["rank"] is not None) == row["kept"]
    kept = [r for r in filtered if r["kept"]]
    assert summary["queries"] == 8 and summary["kept"] == len(kept) > 0
    assert summary["kept_fraction"] == len(kept) / sum(bool(r["query"]) for r in filtered)
    assert summary["queries_per_s"] > 0 and len(list((workdir / "generate").glob("part-*.stats.json"))) == 2

    pairs = [json.loads(line) for line in (workdir / "pairs.jsonl").read_text().splitlines()]
    assert [(p["doc_id"], p["query"]) for p in pairs] == [(r["doc_id"], r["query"]) for r in kept]
    dsi = read_pseudo_queries(workdir / "pseudo_queries.jsonl")  # DSIData.pseudo_queries
    assert sum(len(q) for q in dsi.values()) == len(kept)
    assert (workdir / "samples.md").read_text().count("- kept:") == 5
    assert json.loads((workdir / "generation.json").read_text())["kept"] == len(kept)

    # A second run reuses every stage: the LM is never loaded, the outputs are unchanged.
    before = (workdir / "filtered.jsonl").read_bytes()
    calls.clear()
    run_job(data, workdir)
    assert calls == [] and (workdir / "filtered.jsonl").read_bytes() == before
    kept_timings = json.loads((workdir / "generation.json").read_text())["load_and_filter"]
    assert {"load_s", "prefix_tokens", "filter_s"} <= set(kept_timings)  # from the first run

    # Losing the merged file regenerates nothing: the parts are reused.
    (workdir / "generated.jsonl").unlink()
    (workdir / "generated.manifest.json").unlink()
    run_job(data, workdir)
    assert calls == [] and (workdir / "filtered.jsonl").read_bytes() == before

    # A damaged stage is refused, naming it; other settings are refused too.
    part = workdir / "generate" / "part-00000.jsonl"
    part.write_text(part.read_text().replace('"sample": 0', '"sample": 5', 1))
    (workdir / "generated.manifest.json").unlink()
    with pytest.raises(InputFileError, match="part-00000.jsonl does not match its manifest"):
        run_job(data, workdir)
    with pytest.raises(ConfigError, match="other settings"):
        run_job(data, workdir, plan=job.PlanConfig(num_examples=1, num_clusters=3))


TRAIN_QUERY = {doc: query for query, doc in TRAIN.values()}


def test_generated_pairs_feed_data_config(tmp_path):
    data = write_collection(tmp_path / "tiny")
    train = load_collection(data, "train")
    generated = tmp_path / "pairs.jsonl"
    generated.write_text(
        json.dumps({"doc_id": "d5", "query": "bowed string instrument", "kept": True}) + "\n" +
        json.dumps({"doc_id": "d6", "query": "dropped query", "kept": False}) + "\n" +
        json.dumps({"query_id": "generated-7", "doc_id": "d6", "query": "plants and light"}) + "\n")
    both = collect_pairs(train, DataConfig(generated_queries=str(generated)))
    labelled = build_training_pairs(train)
    assert list(both)[:len(labelled)] == list(labelled)
    extra = [(p.qid, p.query, p.pos_id) for p in list(both)[len(labelled):]]
    assert extra == [("generated-1", "bowed string instrument", "d5"),
                     ("generated-7", "plants and light", "d6")]
    assert list(both)[-1].pos_text == DOCS["d6"]
    alone = collect_pairs(train, DataConfig(generated_queries=str(generated), labelled_pairs=False))
    assert [p.qid for p in alone] == ["generated-1", "generated-7"]
    with pytest.raises(ConfigError, match="leaves no training pairs"):
        DataConfig(labelled_pairs=False)
    generated.write_text(json.dumps({"doc_id": "nope", "query": "x"}) + "\n")
    with pytest.raises(InputFileError, match="'nope', which is not in the collection"):
        collect_pairs(train, DataConfig(generated_queries=str(generated)))
    generated.write_text('{"doc_id": "d1", "query": 3}\n')
    with pytest.raises(InputFileError, match=r"pairs\.jsonl:1: expected 'doc_id'"):
        collect_pairs(train, DataConfig(generated_queries=str(generated)))


def test_plan_fingerprint_names_the_example_floor_only_when_set():
    """Stages made before `min_example_words` existed keep their fingerprint (no regeneration),
    and setting it makes a different plan stage."""
    default = job.PlanConfig(num_examples=2, max_documents=5)
    assert "min_example_words" not in default.fingerprint()
    assert default.fingerprint() == {"num_examples": 2, "num_clusters": 16, "max_documents": 5,
                                     "seed": 0}
    floored = dataclasses.replace(default, min_example_words=4)
    assert floored.fingerprint() == {**default.fingerprint(), "min_example_words": 4}
