"""The paper's Table I ("Performance comparison on closed-ended audio tasks") as data.

Transcribed from the paper (arXiv 2411.15685, Table I; ``docs/paper.md``): the rows the report prints beside
ours. Numbers are percentages as printed (accuracy, micro-F1, mAP, SPICE x 100). ``None`` means the paper
printed "-". The averages are the paper's own (``test_eval_report.py`` checks them against the columns).
"""

from __future__ import annotations

from dataclasses import dataclass

# Table I columns, in the paper's order: (column name, metric printed under it).
CLASSIFICATION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ESC50", "Acc"),
    ("DCASE", "Mi-F1"),
    ("VS", "Acc"),
    ("TUT", "Acc"),
    ("BJO", "Acc"),
    ("VGG", "Acc"),
    ("FSD", "mAP"),
    ("AudioSet", "mAP"),
)
CAPTION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("AudioCaps", "SPICE"),
    ("Clotho", "SPICE"),
)
CLASSIF_AVG = "Classif. Avg."
CAP_AVG = "Cap. Avg."

# Every column of Table I, in order.
COLUMNS: tuple[str, ...] = (
    *(c for c, _ in CLASSIFICATION_COLUMNS),
    CLASSIF_AVG,
    *(c for c, _ in CAPTION_COLUMNS),
    CAP_AVG,
)

# Which columns are zero-shot in the paper's notation (ZS / ZS-).
ZERO_SHOT: dict[str, str] = {"ESC50": "ZS-", "DCASE": "ZS-", "VS": "ZS", "TUT": "ZS", "BJO": "ZS"}


@dataclass(frozen=True)
class PaperRow:
    """One row of Table I: a system's name and its value per column (``None`` where the paper has "-")."""

    name: str
    values: dict[str, float | None]


def _row(name: str, *numbers: float | None) -> PaperRow:
    assert len(numbers) == len(COLUMNS), name
    return PaperRow(name=name, values=dict(zip(COLUMNS, numbers, strict=True)))


# The rows the report prints: the LTU baseline and the paper's own systems.
PAPER_ROWS: tuple[PaperRow, ...] = (
    _row("LTU (7B) [paper]", 83.1, 45.9, 55.6, 32.5, 69.9, 50.3, 46.3, 18.7, 50.3, 17.0, 11.9, 14.5),
    _row(
        "Small Hybrid-LALM (7B) [paper]",
        87.4,
        47.9,
        58.2,
        28.0,
        67.0,
        48.6,
        46.4,
        18.4,
        50.2,
        17.0,
        12.6,
        14.8,
    ),
    _row(
        "Medium Hybrid-LALM (7B) [paper]",
        85.6,
        49.5,
        59.4,
        30.6,
        59.3,
        49.4,
        46.1,
        18.3,
        49.8,
        17.6,
        12.4,
        15.0,
    ),
    _row("Small ssLALM (3B) [paper]", 84.3, 46.4, 55.8, 34.1, 61.9, 51.2, 47.8, 18.6, 50.0, 18.0, 12.1, 15.1),
    _row(
        "Medium ssLALM (3B) [paper]", 86.8, 47.9, 61.2, 35.9, 61.0, 51.0, 47.7, 19.4, 51.4, 17.7, 11.7, 14.7
    ),
)

__all__ = [
    "CAPTION_COLUMNS",
    "CAP_AVG",
    "CLASSIFICATION_COLUMNS",
    "CLASSIF_AVG",
    "COLUMNS",
    "PAPER_ROWS",
    "PaperRow",
    "ZERO_SHOT",
]
