"""Contact sheets: the top entries of a doctor list as thumbnails with split, labels and score,
so that a person can look and decide. Drawn with matplotlib's object API (Agg), no pyplot."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from featcache.analysis.pixels import RowPixels

if TYPE_CHECKING:
    from featcache.analysis.doctor import DoctorReport

__all__ = ["contact_sheet"]

_TITLES = {
    "exact_duplicates": "exact duplicates (same content key)",
    "near_duplicates": "near-duplicate pairs (those that make the leakage figure first)",
    "label_issues": "label issues (given → suggested)",
    "outliers": "outliers (distance to nearest neighbours)",
}


def _short(text: Any, width: int = 22) -> str:
    text = "-" if text is None or (isinstance(text, float) and np.isnan(text)) else str(text)
    return str(text) if len(text) <= width else "…" + str(text)[-(width - 1) :]


def _caption(path: Any, split: Any, label: Any = None) -> tuple[str, str]:
    text = f"{_short(path)}\n{split}"
    return str(path), text if label is None else f"{text} · {_short(label, 14)}"


def _panels(kind: str, row: dict[Any, Any]) -> tuple[list[tuple[str, str]], str]:
    """(path, caption) per thumbnail of one entry, and the entry's heading."""
    if kind == "exact_duplicates":
        shown = list(zip(row["paths"], row["splits"], row["labels"], strict=True))[:2]
        flag = "labels differ" if row["conflict"] else ""
        flag = flag or ("across splits" if row["cross_split"] else "")
        return [_caption(*entry) for entry in shown], f"{row['count']} copies {flag}".strip()
    if kind == "near_duplicates":
        flag = "leaks · " if row["leaks"] else ("" if row["grouped"] else "not grouped · ")
        return [
            _caption(row["path_a"], row["part_a"], row["label_a"]),
            _caption(row["path_b"], row["part_b"], row["label_b"]),
        ], f"{flag}{row['similarity']:.3f} ({row['signal']})"
    if kind == "label_issues":
        heading = f"{_short(row['given'], 12)} → {_short(row['suggested'], 12)}"
        return [_caption(row["path"], row["split"])], f"{heading} ({row['score']:.3f})"
    return [_caption(row["path"], row["split"], row["label"])], f"score {row['score']:.3f}"


def contact_sheet(
    kind: str, table: pd.DataFrame, path: Path, pixels: RowPixels, report: DoctorReport
) -> None:
    """Draw `table`'s entries (already cut to the top N) into the PNG `path`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    entries = [_panels(kind, r) for r in table.to_dict("records")]
    per_entry = 2 if kind in ("exact_duplicates", "near_duplicates") else 1
    columns = 4 if per_entry == 2 else 8
    rows = max(1, -(-len(entries) // columns))
    fig = Figure(figsize=(1.9 * columns * per_entry, 2.25 * rows + 0.9), dpi=100)
    FigureCanvasAgg(fig)
    note = f" · {report.weights_note}" if report.weights_note else ""
    fig.suptitle(
        textwrap.fill(
            f"{_TITLES[kind]}: dataset '{report.dataset}' [{report.layer}], top {len(entries)} "
            f"of {len(getattr(report, kind))}{note}",
            width=int(20 * columns * per_entry / 2),
        ),
        fontsize=10,
    )
    if not entries:
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, "nothing found", ha="center", va="center", fontsize=12)
    grid = fig.add_gridspec(rows, columns * per_entry, wspace=0.08, hspace=0.55)
    for n, (panels, heading) in enumerate(entries):
        r, c = divmod(n, columns)
        for p, (source, caption) in enumerate(panels):
            ax = fig.add_subplot(grid[r, c * per_entry + p])
            ax.set_xticks([])
            ax.set_yticks([])
            image = pixels.rgb(source)
            if image is None:
                ax.text(0.5, 0.5, "file\nnot found", ha="center", va="center", fontsize=8)
            else:
                ax.imshow(image, interpolation="nearest")
            ax.set_xlabel(caption, fontsize=6.5)
            if p == 0:
                ax.set_title(heading, fontsize=7.5, loc="left", color="darkred")
    fig.savefig(path, metadata={"Description": report.weights_note or ""})
