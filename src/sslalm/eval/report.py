"""The Table I report: our results beside the paper's rows, as Markdown and CSV.

The main table has exactly the paper's columns (8 classification sets, Classif. Avg., AudioCaps and Clotho
SPICE, Cap. Avg.) with the paper's rows for LTU, Small/Medium Hybrid-LALM and Small/Medium ssLALM above ours.
In our rows "—" marks a benchmark that was not run, "n/r" a caption set whose SPICE could not run (the footer
says why; CIDEr-D, METEOR, BLEU-4, ROUGE-L and SPIDEr then sit in the caption table below). An average over
fewer benchmarks than the paper's is shown with its count, e.g. "41.2 (3/8)". The footer names the metric of
each column, the text embedder, the tokenizer, and whether SPICE ran.

CSV: one row per system, the same 12 columns as numbers (empty = not available), then per caption set its
CIDEr-D, METEOR, BLEU-4, ROUGE-L, SPICE and SPIDEr, then the embedder and the SPICE status.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

from sslalm.eval.paper_table import (
    CAP_AVG,
    CAPTION_COLUMNS,
    CLASSIF_AVG,
    CLASSIFICATION_COLUMNS,
    COLUMNS,
    PAPER_ROWS,
    ZERO_SHOT,
    PaperRow,
)

DASH = "—"
NOT_RUN = "n/r"
CAPTION_DETAIL = ("CIDEr-D", "METEOR", "BLEU-4", "ROUGE-L", "SPICE", "SPIDEr")
METRIC_NAMES = {"acc": "accuracy", "mi-f1": "micro-F1", "map": "mAP", "spice": "SPICE"}


def _by_column(results: dict) -> dict[str, dict]:
    return {entry["column"]: entry for entry in results.get("benchmarks", {}).values()}


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))


def our_values(results: dict) -> dict[str, float | None]:
    """Our numbers per Table I column (None where not available); averages only over what ran."""
    cols = _by_column(results)
    vals: dict[str, float | None] = {}
    for group, avg in ((CLASSIFICATION_COLUMNS, CLASSIF_AVG), (CAPTION_COLUMNS, CAP_AVG)):
        got = []
        for col, _ in group:
            v = cols.get(col, {}).get("value")
            vals[col] = v if _is_num(v) else None
            if vals[col] is not None:
                got.append(vals[col])
        vals[avg] = sum(got) / len(got) if got else None
    return vals


def _our_cells(results: dict) -> dict[str, str]:
    cols = _by_column(results)
    vals = our_values(results)
    cells = {}
    for group, avg in ((CLASSIFICATION_COLUMNS, CLASSIF_AVG), (CAPTION_COLUMNS, CAP_AVG)):
        n = 0
        for col, _ in group:
            if vals[col] is not None:
                cells[col] = f"{vals[col]:.1f}"
                n += 1
            else:
                cells[col] = NOT_RUN if col in cols else DASH
        if vals[avg] is None:
            cells[avg] = DASH
        else:
            cells[avg] = f"{vals[avg]:.1f}" + ("" if n == len(group) else f" ({n}/{len(group)})")
    return cells


def _paper_cells(row: PaperRow) -> dict[str, str]:
    return {c: DASH if row.values[c] is None else f"{row.values[c]:.1f}" for c in COLUMNS}


def _header() -> list[str]:
    metric = dict(CLASSIFICATION_COLUMNS + CAPTION_COLUMNS)
    out = []
    for c in COLUMNS:
        zs = f" {ZERO_SHOT[c]}" if c in ZERO_SHOT else ""
        out.append(f"{c}{zs} ({metric[c]})" if c in metric else c)
    return out


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _fmt(v) -> str:
    return f"{v:.1f}" if _is_num(v) else NOT_RUN


def render_markdown(runs: Sequence[dict], paper_rows: Sequence[PaperRow] = PAPER_ROWS) -> str:
    """The report for one or more runs (each a ``results.json`` dict) beside the paper's rows."""
    header = ["Model", *_header()]
    rows = [[r.name, *(_paper_cells(r)[c] for c in COLUMNS)] for r in paper_rows]
    for res in runs:
        cells = _our_cells(res)
        rows.append([f"**{res.get('model') or 'ours'}** (ours)", *(cells[c] for c in COLUMNS)])
    parts = ["# Closed-ended audio tasks (paper Table I protocol)", "", _md_table(header, rows), ""]

    cap_rows = []
    for res in runs:
        for e in res.get("benchmarks", {}).values():
            if e["task"] != "captioning":
                continue
            s = e.get("scores", {})
            cap_rows.append(
                [
                    res.get("model") or "ours",
                    e["column"],
                    *(_fmt(s.get(m)) for m in CAPTION_DETAIL),
                    f"{e['n_scored']}/{e['n_clips']}",
                ]
            )
    if cap_rows:
        parts += [
            "## Caption metrics (ours, x100)",
            "",
            _md_table(["Model", "Set", *CAPTION_DETAIL, "clips"], cap_rows),
            "",
        ]

    run_rows = []
    for res in runs:
        for name, e in res.get("benchmarks", {}).items():
            skipped = ", ".join(f"{n} {why}" for why, n in sorted(e.get("skipped", {}).items())) or "0"
            extra = ""
            if e["task"] == "classification" and "details" in e:
                d = e["details"]
                acc, mf1, mAP = (_fmt(d.get(k)) for k in ("accuracy", "micro_f1", "map"))
                extra = f"acc {acc}, mi-F1 {mf1}, mAP {mAP}"
            run_rows.append(
                [
                    res.get("model") or "ours",
                    name,
                    METRIC_NAMES.get(e["metric"], e["metric"]),
                    _fmt(e.get("value")),
                    f"{e['n_scored']}/{e['n_clips']}",
                    skipped,
                    str(e.get("malformed", 0)),
                    extra,
                ]
            )
    if run_rows:
        parts += [
            "## Runs",
            "",
            _md_table(
                [
                    "Model",
                    "Benchmark",
                    "Metric",
                    "Value",
                    "Clips scored",
                    "Clips skipped",
                    "Malformed rows",
                    "All classification metrics",
                ],
                run_rows,
            ),
            "",
        ]
    parts += ["## Notes", "", *_footer(runs)]
    return "\n".join(parts) + "\n"


def _footer(runs: Sequence[dict]) -> list[str]:
    metric_desc = ", ".join(f"{c}: {m}" for c, m in CLASSIFICATION_COLUMNS + CAPTION_COLUMNS)
    lines = [
        f"- Metric per column (percent): {metric_desc}. "
        "Averages are plain means over the columns of their group.",
        "- Classification is done by captioning: the model answers "
        "`Close-ended question: Write an audio caption describing the sound.`; the answer and every label "
        'are embedded as `"sound of " + lower-case text`, and the cosine similarities rank the labels '
        "(accuracy and micro-F1 from the top label, mAP from the similarity scores).",
        "- Captioning prompts: AudioCaps "
        "`Close-ended question: Write an audio caption describing the sound, in AudioCaps style.`; Clotho "
        "`Close-ended question: Create a caption for audio, in Clotho style.`; one answer per clip against "
        "all its reference captions (pycocoevalcap; CIDEr-D is its `Cider`).",
    ]
    for res in runs:
        who = res.get("model") or "ours"
        emb = res.get("embedder")
        if emb:
            note = (
                ""
                if "ada-002" in emb
                else (
                    " The paper used OpenAI text-embedding-ada-002, so these "
                    "classification numbers are not directly comparable with its rows."
                )
            )
            lines.append(f"- {who}: text embedder `{emb}`.{note}")
        spice = res.get("spice", {})
        if spice.get("ran") is True:
            lines.append(f"- {who}: SPICE ran (Stanford CoreNLP 3.6.0); SPIDEr = (CIDEr-D + SPICE) / 2.")
        elif spice.get("ran") is False:
            lines.append(
                f"- {who}: SPICE not run ({spice.get('reason')}). The AudioCaps/Clotho columns show "
                f"`{NOT_RUN}`; see the caption table for CIDEr-D, METEOR, BLEU-4 and ROUGE-L."
            )
        if res.get("tokenizer"):
            tok = (
                "PTB (Stanford CoreNLP via pycocoevalcap)" if res["tokenizer"] == "ptb" else "Python fallback"
            )
            lines.append(f"- {who}: caption tokenizer {tok}.")
    lines += [
        f"- `{DASH}`: not run or not reported. `{NOT_RUN}`: run, but the metric could not be computed. "
        "`(k/n)`: average over k of the paper's n columns.",
        "- Paper rows: Table I of *State-Space Large Audio Language Models* (arXiv 2411.15685). "
        "ZS: zero-shot; ZS-: weak zero-shot.",
    ]
    return lines


def render_csv(runs: Sequence[dict], paper_rows: Sequence[PaperRow] = PAPER_ROWS) -> str:
    """CSV with the paper's columns (numbers; empty when not available) and our caption details."""
    cap_cols = [f"{col} {m}" for col, _ in CAPTION_COLUMNS for m in CAPTION_DETAIL]
    header = ["model", "source", *COLUMNS, *cap_cols, "embedder", "spice"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in paper_rows:
        w.writerow(
            [
                r.name,
                "paper",
                *("" if r.values[c] is None else r.values[c] for c in COLUMNS),
                *([""] * len(cap_cols)),
                "openai-text-embedding-ada-002",
                "ran",
            ]
        )
    for res in runs:
        vals = our_values(res)
        cols = _by_column(res)
        details = []
        for col, _ in CAPTION_COLUMNS:
            s = cols.get(col, {}).get("scores", {})
            details += [round(s[m], 2) if _is_num(s.get(m)) else "" for m in CAPTION_DETAIL]
        spice = res.get("spice", {})
        status = (
            "ran"
            if spice.get("ran")
            else ("" if spice.get("ran") is None else f"not run: {spice.get('reason')}")
        )
        w.writerow(
            [
                res.get("model") or "ours",
                "ours",
                *("" if vals[c] is None else round(vals[c], 2) for c in COLUMNS),
                *details,
                res.get("embedder") or "",
                status,
            ]
        )
    return buf.getvalue()


def write_report(results: dict | Sequence[dict], out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.csv`` into ``out_dir``; returns their paths."""
    runs = [results] if isinstance(results, dict) else list(results)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, cs = out / "report.md", out / "report.csv"
    md.write_text(render_markdown(runs), encoding="utf-8")
    cs.write_text(render_csv(runs), encoding="utf-8")
    return md, cs
