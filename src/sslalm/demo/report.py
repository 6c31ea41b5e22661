"""The demo's outputs: ``results.json``, ``report.md`` and ``loss.png`` (and the console table).

Everything here is rendered from the results dict of ``sslalm.demo.pipeline.run_demo``, so a report can be
redrawn from ``results.json`` alone (``write_outputs(json.load(...), out)``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CAPTION_METRICS = ("CIDEr-D", "METEOR", "BLEU-4", "ROUGE-L", "SPICE")


def _num(v: Any, fmt: str = "{:.1f}") -> str:
    return fmt.format(v) if isinstance(v, (int, float)) else "n/r"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _millions(n: int) -> str:
    return f"{n / 1e6:.3f}"


def _parameters(training: dict) -> str:
    return f"{_millions(training['num_parameters'])} / {_millions(trainable_parameters(training))}"


def trainable_parameters(training: dict) -> int:
    p = training["parameters"]
    return sum(p.get(part, 0) for part in training.get("trainable_parts", ("encoder", "projector", "lora")))


def results_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """The side-by-side table: one row per measure, one column per model."""
    models = results["models"]
    header = ["", *[m["title"] for m in models.values()]]
    chance = results["chance"]

    def row(name: str, fn) -> list[str]:
        return [name, *[fn(m) for m in models.values()]]

    def caption(metric: str):
        return lambda m: _num(m["eval"]["captions"].get(metric))

    rows = [
        row(
            "parameters: total / trainable (M)",
            lambda m: _parameters(m["training"]),
        ),
        row(
            f"accuracy, paper prompt (%; chance {chance['uniform']:.1f}, majority {chance['majority']:.1f})",
            lambda m: _num(m["eval"]["accuracy"]),
        ),
        row("accuracy, corpus label question (%)", lambda m: _num(m["eval"]["label_accuracy"])),
        *[row(f"caption {k}", caption(k)) for k in CAPTION_METRICS],
        row(
            "training time: wall / CPU (s)",
            lambda m: f"{m['training']['wall_s']:.0f} / {m['training']['cpu_s']:.0f}",
        ),
        row("time to first token (ms)", lambda m: _num(m["latency"]["ttft_ms"])),
        row("per-token latency (ms)", lambda m: _num(m["latency"]["per_token_ms"], "{:.2f}")),
        row(
            "peak RSS: training / inference (MB)",
            lambda m: f"{m['training']['peak_rss_mb']:.0f} / {m['latency']['peak_rss_mb']:.0f}",
        ),
        row(
            "RSS after imports: training / inference (MB)",
            lambda m: f"{m['training']['start_rss_mb']:.0f} / {m['latency']['start_rss_mb']:.0f}",
        ),
    ]
    return header, rows


def console_table(results: dict) -> str:
    """The results table as aligned plain text."""
    header, rows = results_rows(results)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def plot_losses(results: dict, path: str | os.PathLike) -> Path:
    """Training loss per logged step: stage 0 (LM text; encoder labels) and curriculum stages 1-4."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    titles = (
        "stage 0: language model on training text",
        "stage 0: audio encoder on training labels",
        "stages 1-4: audio question answering",
    )
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("training loss")
    colors = ("tab:blue", "tab:orange", "tab:green")
    for color, m in zip(colors, results["models"].values()):
        offset, bounds = 0, []
        for st in m["training"]["stages"]:
            pts = st["losses"]
            if not pts:
                continue
            steps = [p[0] for p in pts]
            losses = [p[1] for p in pts]
            if st["stage"].startswith("0: LM"):
                axes[0].plot(steps, losses, color=color, label=m["title"])
            elif st["stage"].startswith("0:"):
                axes[1].plot(steps, losses, color=color, label=m["title"])
            else:
                axes[2].plot(
                    [offset + x for x in steps], losses, color=color, label=m["title"] if not bounds else None
                )
                offset += _stage_steps(st)
                bounds.append(offset)
        for b in bounds[:-1]:
            axes[2].axvline(b, color="grey", linestyle=":", linewidth=1)
    for ax in axes:
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _stage_steps(stage: dict) -> int:
    return int(stage.get("steps") or (stage["losses"][-1][0] if stage["losses"] else 0))


def _stage_table(results: dict) -> str:
    rows = []
    for m in results["models"].values():
        for st in m["training"]["stages"]:
            pts = st["losses"]
            rows.append(
                [
                    m["title"],
                    st["stage"],
                    str(_stage_steps(st)),
                    _num(pts[0][1], "{:.3f}") if pts else "—",
                    _num(pts[-1][1], "{:.3f}") if pts else "—",
                    f"{st['wall_s']:.0f}",
                    f"{st['cpu_s']:.0f}",
                ]
            )
    return _table(["model", "stage", "steps", "first loss", "last loss", "wall s", "CPU s"], rows)


def render_markdown(results: dict) -> str:
    s = results["settings"]
    c = results["corpus"]
    ch = results["chance"]
    header, rows = results_rows(results)
    lines = [
        "# sslalm demo report",
        "",
        f"Schedule **{s['name']}**, seed {s['seed']}, {s['threads']} torch thread(s) on a "
        f"{results['machine']['cpus']}-CPU machine (load average before / after: "
        f"{results['machine']['load_before'][0]:.1f} / {results['machine']['load_after'][0]:.1f}); "
        f"total {results['total_s'] / 60:.1f} min.",
        "",
        "## Results on the test split",
        "",
        _table(header, rows),
        "",
        f"Chance: {ch['num_labels']} labels, uniform guessing {ch['uniform']:.1f} %; always answering the "
        f"most frequent label ({ch['majority_label']}) {ch['majority']:.1f} % on {ch['num_clips']} clips. "
        "Accuracy follows the paper's protocol: the model captions each clip "
        "(`Close-ended question: Write an audio caption describing the sound.`), the caption and every label "
        "are embedded as `sound of <text>` and the most similar label is the prediction (embedder: "
        f"{next(iter(results['models'].values()))['eval']['embedder']}). The same caption is scored against "
        "the clip's reference captions. The second accuracy asks the corpus's own label question.",
        "",
        "What is measured: training time is the wall and CPU time of stages 0-4 in the training process; "
        "time to first token is `generate(max_new_tokens=1)` from an in-memory waveform (fbank, encoder, "
        "projector, prefill, one token); per-token latency is the LM's decode step alone (Mamba's recurrent "
        "step, the transformer's KV-cache step), greedy, median over clips; peak RSS is the peak resident "
        "memory of the training process and of a fresh inference process, counted from the end of their "
        "imports (Linux high-water mark reset); the RSS at that point (Python, PyTorch, transformers) is "
        "shown too.",
        "",
        "![training loss](loss.png)",
        "",
        "## Answers to a few test questions",
        "",
    ]
    for q in results["questions"]:
        lines.append(f"- `{q['audio_id']}` ({q['task']}): **{q['question']}**  ")
        lines.append(f"  reference: {q['reference']}  ")
        for key, ans in q["answers"].items():
            lines.append(f"  {results['models'][key]['title']}: {ans}  ")
    lines += [
        "",
        "## Training",
        "",
        "No pretrained weights exist offline, so a stage 0 stands in for pretraining (the paper's DASS is "
        "AudioSet-pretrained and its Mamba Pile-pretrained): the language model learns the training split's "
        "text (question template and answer of every record, no audio), and "
        "the audio encoder learns the training clips' labels. Then the curriculum of "
        "`configs/stage1..4.yaml` runs (the parts each stage trains are in its name). Two departures "
        "from the paper, both measured (see `sslalm.demo.recipe`): from stage 2 on, the stand-in language "
        "model's own weights train beside LoRA (the paper's LM is a pretrained 2.8B model that LoRA only "
        "steers; ours saw minutes of text), and stage 2 keeps the stage-0 encoder (half the step cost, "
        "no worse per step).",
        "",
        _stage_table(results),
        "",
        "## Settings",
        "",
        "```json",
        json.dumps(s, indent=1),
        "```",
        "",
        "## Corpus",
        "",
        f"`{c['dir']}` ({'reused' if c['reused'] else 'built'} in {c['seconds']:.0f} s): clips "
        + ", ".join(f"{k} {v}" for k, v in c["clips"].items())
        + "; records "
        + ", ".join(f"{k} {v}" for k, v in c["records"].items())
        + "; sources "
        + ", ".join(c["sources"])
        + (f" (skipped: {', '.join(c['skipped_sources'])})" if c["skipped_sources"] else "")
        + ".",
        "",
    ]
    return "\n".join(lines)


def write_outputs(results: dict, out_dir: str | os.PathLike) -> dict[str, Path]:
    """``results.json``, ``loss.png`` and ``report.md`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"results": out / "results.json", "plot": out / "loss.png", "report": out / "report.md"}
    paths["results"].write_text(json.dumps(results, indent=1), encoding="utf-8")
    plot_losses(results, paths["plot"])
    paths["report"].write_text(render_markdown(results), encoding="utf-8")
    return paths
