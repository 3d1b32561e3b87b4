"""A tiny BEIR collection with real sentences, for tests of corpus-scale machinery."""
import json
from pathlib import Path

SENTENCES = [
    "The jaguar is a large cat native to the Americas.",
    "Python is a programming language with dynamic typing.",
    "Coffee is brewed from roasted coffee beans.",
    "Glaciers are slow rivers of ice that carve valleys.",
    "Violins are string instruments played with a bow.",
    "Photosynthesis turns light, water and carbon dioxide into sugar.",
    "Volcanoes release molten rock, ash and gases.",
    "The heart pumps blood through the body.",
]
QUERIES = {"q1": ("which big cat lives in america", "d0"), "q2": ("how is coffee made", "d2"),
           "q3": ("instrument played with a bow", "d4"), "q4": ("what carves valleys", "d3")}


def write_corpus(root: Path, count: int) -> Path:
    """`count` documents d0.. (sentence i % 8, numbered), four judged test queries."""
    (root / "qrels").mkdir(parents=True)
    docs = "".join(json.dumps({"_id": f"d{i}", "title": "",
                               "text": f"{SENTENCES[i % len(SENTENCES)]} (note {i})"}) + "\n"
                   for i in range(count))
    (root / "corpus.jsonl").write_text(docs)
    (root / "queries.jsonl").write_text("".join(
        json.dumps({"_id": q, "text": t}) + "\n" for q, (t, _) in QUERIES.items()))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t1\n" for q, (_, d) in QUERIES.items()))
    return root
