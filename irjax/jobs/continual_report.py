"""The continual-indexing report: the phase rows of `continual_dsi` as JSON, a Markdown table
and, when matplotlib is installed (it is not an irjax dependency), a bar chart."""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

from irjax.files import atomic_write_text

log = logging.getLogger(__name__)

COLUMNS = (  # (header, row key)
    ("phase", "phase"), ("steps", "steps"), ("D0 Hits@1", "d0_hits@1"),
    ("D0 Hits@10", "d0_hits@10"), ("D1 Hits@1", "d1_hits@1"), ("D1 Hits@10", "d1_hits@10"),
    ("D0-query R@10", "d0_query_R@10"), ("D0-query nDCG@10", "d0_query_nDCG@10"),
    ("D1-query R@10", "d1_query_R@10"), ("forgetting (D0 Hits@1)", "forgetting_hits@1"),
)
PLOTTED = (("D0 Hits@1", "d0_hits@1"), ("D1 Hits@1", "d1_hits@1"),
           ("D0-query R@10", "d0_query_R@10"))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """One line per phase; '-' where a number does not apply (phase 1 has no forgetting)."""
    cells = [[_cell(row.get(key)) for _, key in COLUMNS] for row in rows]
    headers = [h for h, _ in COLUMNS]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"

    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *(line(c) for c in cells)])


def write_plot(rows: Sequence[dict[str, Any]], path: Path) -> bool:
    """Grouped bars per phase; returns False (and logs) when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib is not installed; skipping %s", path.name)
        return False
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(PLOTTED)
    for i, (label, key) in enumerate(PLOTTED):
        values = [row.get(key) or 0.0 for row in rows]
        ax.bar([x + i * width for x in range(len(rows))], values, width, label=label)
    ax.set_xticks([x + width * (len(PLOTTED) - 1) / 2 for x in range(len(rows))],
                  [row["phase"] for row in rows])
    ax.set_ylim(0, 1)
    ax.legend(loc="upper right", fontsize="small")
    ax.set_title("Continual indexing: memorization and retrieval per phase")
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return True


def write_report(workdir: Path, report: dict[str, Any]) -> None:
    """WORKDIR/continual.json, continual.md (printed too) and continual.png."""
    rows = report["rows"]
    atomic_write_text(workdir / "continual.json", json.dumps(report, indent=2) + "\n")
    split, probed = report["split"], report["probed_documents"]
    caption = (f"{report['dataset']}: {split['num_old']} old (D0) + {split['num_new']} new (D1) "
               f"documents; memorization probes {probed['d0']} D0 / {probed['d1']} D1 docs; "
               f"retrieval on {report['eval_split']} queries answered only by D0 "
               f"({rows[0].get('d0_queries', 0)}) or D1 ({rows[0].get('d1_queries', 0)}). "
               "Forgetting = phase1 D0 Hits@1 - phase D0 Hits@1.")
    table = markdown_table(rows)
    print(table)
    atomic_write_text(workdir / "continual.md", caption + "\n\n" + table + "\n")
    write_plot(rows, workdir / "continual.png")
