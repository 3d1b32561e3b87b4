"""Lexical signals of generated queries: stopwords do not count as overlap."""
import pytest

from irjax.evaluation.query_quality import content_words, query_quality


def test_overlap_copy_rate_and_uniqueness():
    docs = {"a": "Coffee is brewed from roasted beans.", "b": "Glaciers carve valleys."}
    queries = {"a": ["how is coffee made", "what is it", "what is it"], "b": ["glaciers valleys"]}
    q = query_quality(docs, queries)
    assert q["num_queries"] == 4
    assert q["overlap_fraction"] == pytest.approx(2 / 4)     # 'what is it' is all stopwords
    assert q["copy_rate"] == pytest.approx((1 / 2 + 0 + 0 + 1) / 4)
    assert q["unique_fraction"] == pytest.approx(3 / 4)
    assert content_words("What IS the COVID-19 rate?") == {"covid", "19", "rate"}
    with pytest.raises(KeyError, match="not given"):
        query_quality(docs, {"zz": ["x"]})
