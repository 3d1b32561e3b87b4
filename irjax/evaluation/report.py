"""Side-by-side tables of evaluation records (metrics.json contents), as Markdown."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence


def comparison_table(records: Sequence[dict[str, Any]]) -> str:
    """One row per record: model, dataset/split, every metric (4 decimals), seconds."""
    measures: list[str] = []
    for record in records:
        measures += [m for m in record["metrics"] if m not in measures]
    header = ["model", "dataset", *measures, "seconds"]
    rows = [
        [
            str(r["model"]),
            f"{r['dataset']}/{r['split']}",
            *(f"{r['metrics'][m]:.4f}" if m in r["metrics"] else "-" for m in measures),
            f"{r.get('seconds', float('nan')):.1f}",
        ]
        for r in records
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print metrics.json files side by side.")
    parser.add_argument("metrics", nargs="+", type=Path, help="metrics.json files")
    args = parser.parse_args(argv)
    records = []
    for path in args.metrics:
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise SystemExit(f"{path}: cannot read metrics ({e})")
    print(comparison_table(records))


if __name__ == "__main__":
    main()
