"""ColBERTer's reduced index through `MaxSimRetriever`: a word whose gate is 0 is not stored, the
other stored vectors are their gated word vectors, and MaxSim over what is stored equals a dense
numpy computation over every word (gate-0 words masked) and the model's own training scores."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irjax.data.collection import load_collection
from irjax.data.tokenization import WordPieceTokenizer
from irjax.models.bert import BertConfig
from irjax.models.multi_vector import MultiVectorModel
from irjax.models.pretrained import load_checkpoint
from irjax.retrieval.multi_vector import MaxSimRetriever, punctuation_ids
from tests.helpers.tiny_collection import DOCS, TEST, TRAIN, write_collection

SCALE = 1000.0


def test_gate_zero_drops_exactly_that_word_and_maxsim_matches_dense_reference(tmp_path):
    collection = load_collection(write_collection(tmp_path / "tiny"), "test")
    tokenizer = WordPieceTokenizer(load_checkpoint().directory)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    skip = punctuation_ids(tokenizer)
    model = MultiVectorModel(config, dim=8, objective="colbert", doc_skip_ids=skip, dropout=False,
                             pooling="word", continuation_ids=tokenizer.continuation_ids,
                             special_ids=tokenizer.special_ids, gate=True, gate_scale=SCALE)
    texts = [d.contents for d in collection.documents]
    docs = tokenizer.encode(texts, 32)
    params = jax.tree.map(lambda x: x.value if hasattr(x, "value") else x,
                          model.init_variables(jax.random.PRNGKey(0),
                                               {"pos_ids": docs.ids, "pos_mask": docs.mask}),
                          is_leaf=lambda x: hasattr(x, "names"))

    # Ungated word vectors (the query-side representation of the same texts).
    plain = model.represent(params, docs.ids, docs.mask, skip)
    vectors, words = np.asarray(plain.vectors), np.asarray(plain.vectors_mask) > 0
    target = vectors[0, 1]                                   # document 0's second word
    others = np.concatenate([vectors[words][:1], vectors[words][2:]])
    m = float(np.max(others @ target))
    assert m < 1 - 1e-3
    # gate = ReLU((1 + m) / 2 - v . target): 0 for the target only, > 0 for every other word.
    params["gate"] = {"kernel": jnp.asarray(-target / SCALE),
                      "bias": jnp.float32((1 + m) / 2 / SCALE)}
    gates = np.maximum((1 + m) / 2 - vectors @ target, 0.0)
    assert np.sum((gates == 0) & words) == 1 and gates[0, 1] == 0

    retriever = MaxSimRetriever(model, params, tokenizer, doc_max_length=32, query_max_length=16,
                                batch_size=4, mode="maxsim", doc_chunk=4)
    stored = retriever.corpus_vectors(collection)
    counts = words.sum(axis=1)
    for i, row in enumerate(stored):
        expected = [gates[i, j] * vectors[i, j] for j in range(counts[i]) if gates[i, j] > 0]
        assert len(row) == counts[i] - (i == 0)
        np.testing.assert_allclose(row, np.array(expected), atol=1e-5)
    stats = retriever.index_stats()
    assert stats["vectors_per_doc"]["words"] == pytest.approx(counts.mean())
    assert stats["vectors_per_doc"]["kept"] == pytest.approx(counts.mean() - 1 / len(DOCS))
    assert stats["bytes_per_doc"] == pytest.approx((counts.mean() - 1 / len(DOCS)) * 8 * 4)
    assert stats["vectors_per_doc"]["tokens"] > stats["vectors_per_doc"]["words"]

    queries = {q: text for q, (text, _) in {**TRAIN, **TEST}.items()}
    run = retriever.retrieve(collection, queries, k=len(DOCS))
    q_batch = tokenizer.encode(list(queries.values()), 16)
    q = model.represent(params, q_batch.ids, q_batch.mask)
    q_vec, q_words = np.asarray(q.vectors), np.asarray(q.vectors_mask) > 0
    gated = vectors * gates[..., None]
    for a, query in enumerate(queries):
        sims = q_vec[a][q_words[a]] @ gated.reshape(-1, 8).T            # every word, dense
        sims = np.where(((gates > 0) & words).reshape(-1), sims, -np.inf).reshape(-1, *words.shape)
        reference = sims.max(axis=-1).mean(axis=0)                     # [docs]
        got = np.array([run[query][d.doc_id] for d in collection.documents])
        np.testing.assert_allclose(got, reference, atol=1e-5)

    # The training path scores the same words the same way.
    batch = {"query_ids": q_batch.ids, "query_mask": q_batch.mask, "pos_ids": docs.ids,
             "pos_mask": docs.mask}
    train_scores = np.asarray(model.scores(params, batch))
    for a, query in enumerate(queries):
        np.testing.assert_allclose(train_scores[a], [run[query][d.doc_id]
                                                     for d in collection.documents], atol=1e-5)

    # A higher threshold prunes the stored vectors (norm = gate) without re-encoding.
    ordered = np.sort(gates[words])
    middle = len(ordered) // 2
    threshold = float(ordered[middle - 1] + ordered[middle]) / 2   # between two gates, not on one
    view = retriever.pruned(threshold)
    pruned = view.corpus_vectors(collection)
    for i, row in enumerate(pruned):
        expected = [gates[i, j] * vectors[i, j] for j in range(counts[i]) if gates[i, j] > threshold]
        np.testing.assert_allclose(row.reshape(-1, 8), np.array(expected).reshape(-1, 8), atol=1e-5)
    kept = ((gates > threshold) & words).sum(axis=1)
    assert 0 < kept.sum() < counts.sum() - 1
    assert view.index_stats()["vectors_per_doc"]["kept"] == pytest.approx(kept.mean())
    assert retriever.index_stats()["vectors_per_doc"]["kept"] == pytest.approx(counts.mean() - 1 / 6)
    assert "encode_corpus_s" not in view.timings      # the encoding was shared
    run = view.retrieve(collection, queries, k=len(DOCS))
    for a, query in enumerate(queries):
        sims = q_vec[a][q_words[a]] @ gated.reshape(-1, 8).T
        sims = np.where(((gates > threshold) & words).reshape(-1), sims, -np.inf)
        best = sims.reshape(-1, *words.shape).max(axis=-1)
        reference = np.where(np.isfinite(best), best, 0.0).mean(axis=0)   # empty doc -> 0
        got = np.array([run[query].get(d.doc_id, np.nan) for d in collection.documents])
        np.testing.assert_allclose(got, reference, atol=1e-5)
    # The threshold that drops half the stored vectors is the median of their gates.
    stored_gates = np.concatenate([gates[i, :counts[i]][gates[i, :counts[i]] > 0]
                                   for i in range(len(counts))])
    assert retriever.gate_quantile(collection, 0.5) == pytest.approx(np.median(stored_gates),
                                                                     rel=1e-5)
    with pytest.raises(ValueError, match="below the model's gate_threshold"):
        retriever.pruned(-1.0)
