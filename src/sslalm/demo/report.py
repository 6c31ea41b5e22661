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

from sslalm.data.corpus.questions import join_and

CAPTION_METRICS = ("CIDEr-D", "METEOR", "BLEU-4", "ROUGE-L", "SPICE")


def _num(v: Any, fmt: str = "{:.1f}") -> str:
    return fmt.format(v) if isinstance(v, (int, float)) else "n/r"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    from sslalm.bench.common import markdown_table

    return markdown_table(header, rows)


def _pair(ev: dict | None, a: str, b: str) -> str:
    return f"{_num(ev.get(a))} / {_num(ev.get(b))}" if ev else "n/r"


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
        row(
            "unseen sources: accuracy, paper prompt / label question (%)",
            lambda m: _pair(m["eval"].get("unseen"), "accuracy", "label_accuracy"),
        ),
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


def baseline_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """Accuracy of the baselines and the models, on the test split and the unseen-sources set."""
    base = results.get("baselines") or {"test": results["chance"]}
    sets = [k for k in ("test", "unseen") if k in base]
    header = ["", *[f"{'test split' if k == 'test' else 'unseen sources'} (%)" for k in sets]]
    rows = [
        ["uniform chance", *[_num(base[k]["uniform"]) for k in sets]],
        [
            "majority answer",
            *[f"{_num(base[k]['majority'])} ({base[k]['majority_label']})" for k in sets],
        ],
        ["linear probe on fbank statistics", *[_num(base[k].get("linear_probe")) for k in sets]],
    ]
    if any("reference_captions" in base[k] for k in sets):
        rows.append(
            [
                "reference captions, paper-prompt protocol (its ceiling)",
                *[_num(base[k].get("reference_captions")) for k in sets],
            ]
        )
    for m in results["models"].values():
        evs = {"test": m["eval"], "unseen": m["eval"].get("unseen")}
        rows.append(
            [
                f"{m['title']}, paper prompt / label question",
                *[_pair(evs[k], "accuracy", "label_accuracy") for k in sets],
            ]
        )
    return header, rows


def fact_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """Per fact: the share of open-ended test answers that state the reference's fact, per model."""
    models = list(results["models"].values())
    names: list[str] = []
    for m in models:
        names += [n for n in m["eval"].get("facts", {}) if n not in names]
    header = ["fact (open-ended test questions)", "questions", *[m["title"] + " (%)" for m in models]]
    rows = []
    for name in names:
        n = next(m["eval"]["facts"][name]["n"] for m in models if name in m["eval"].get("facts", {}))
        rows.append(
            [name, str(n), *[_num(m["eval"].get("facts", {}).get(name, {}).get("accuracy")) for m in models]]
        )
    return header, rows


def model_commands(results: dict) -> list[str]:
    """The commands that open the trained ssLALM (the last stage's folder) in the app and the HTTP server."""
    final = results.get("final_model")
    if not final:
        return []
    return [f"sslalm app --model {final}", f"sslalm serve --model {final}"]


def console_table(results: dict, rows_fn=None) -> str:
    """A table (default: ``results_rows``) as aligned plain text."""
    header, rows = (rows_fn or results_rows)(results)
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


def _encoder_recipe(settings: dict[str, Any]) -> str:
    """How the schedule trains the stage-0 encoder, as a parenthesis to append (``" (with random level and
    noise, mixup (Beta 0.4) and drop path (DASS) or dropout (AST) 0.1; clips drawn label-balanced)"``),
    or ``""``. Settings missing from older results take the defaults they had then (augmentation on)."""
    parts = []
    if settings.get("encoder_augment", True):
        kinds = ["random level"]
        if settings.get("encoder_noise", True):
            kinds.append("noise")
        if settings.get("encoder_eq", True):
            kinds.append("equaliser")
        if settings.get("encoder_speed", 0) > 0:
            kinds.append(f"speed (x{1 - settings['encoder_speed']:g}-{1 + settings['encoder_speed']:g})")
        parts.append(join_and(kinds))
    if settings.get("encoder_spec_masks"):
        parts.append("SpecAugment masks")
    if settings.get("encoder_mixup", 0) > 0:
        parts.append(f"mixup (Beta {settings['encoder_mixup']:g})")
    if settings.get("encoder_drop", 0) > 0:
        parts.append(f"drop path (DASS) or dropout (AST) {settings['encoder_drop']:g}")
    clauses = ["with " + join_and(parts)] if parts else []
    if settings.get("encoder_balance", 0) > 0:
        clauses.append("clips drawn label-balanced")
    if settings.get("encoder_fact_draws", 1.0) != 1.0:
        clauses.append(
            f"speech clips, which teach the language, drawn {settings['encoder_fact_draws']:g} times as often"
        )
    if settings.get("encoder_pool", "mean") == "mean+max":
        clauses.append("its classifier head reads the mean and the maximum of its map")
    if settings.get("encoder_cepstra", 0) > 0:
        from sslalm.data.corpus.inventory import INSTRUMENT_LABELS

        labels_too = settings.get("encoder_cepstra_labels", True)
        if labels_too is True:
            who = "its classifier head also reads"
        elif not labels_too:
            who = "its language columns also read"
        elif set(labels_too) == set(INSTRUMENT_LABELS):
            who = "its columns for the language and the instruments also read"
        else:
            who = f"its columns for the language and for {join_and(sorted(labels_too))} also read"
        clauses.append(
            f"{who} the covariance of the fbank's first {settings['encoder_cepstra']} cepstra and "
            "their deltas (`sslalm.models.cepstral`; not in the paper)"
        )
    return f" ({'; '.join(clauses)})" if clauses else ""


def _frozen_encoder(settings: dict[str, Any]) -> str:
    """ "; stages 2-4 keep the stage-0 encoder" (the stages of ``encoder_frozen_in``), else ""."""
    stages = sorted(settings.get("encoder_frozen_in", ()))
    if not stages:
        return ""
    if len(stages) == 1:
        return f"; stage {stages[0]} keeps the stage-0 encoder as it is"
    contiguous = stages == list(range(stages[0], stages[-1] + 1))
    named = f"{stages[0]}-{stages[-1]}" if contiguous else ", ".join(map(str, stages))
    return f"; stages {named} keep the stage-0 encoder as it is"


FACT_CLIPS = {"language": "the language of speech clips", "instrument": "the instrument of instrument clips"}


def _facts(settings: dict[str, Any]) -> list[str]:
    """The facts stage 0 learns (results of older code have no ``encoder_facts``: the language alone)."""
    return list(settings.get("encoder_facts", ["language"]))


def _facts_learnt(settings: dict[str, Any]) -> str:
    """ "the language of speech clips" (and the other facts stage 0 learns), in words."""
    return join_and([FACT_CLIPS.get(f, f"the {f} of the clips that have one") for f in _facts(settings)])


def _tag_tokens(settings: dict[str, Any]) -> str:
    """ "; the model keeps the stage-0 head ..." when the schedule sets ``tag_tokens``, else ""."""
    out = ""
    if settings.get("tag_tokens", False):
        facts = _facts(settings)
        named = join_and([f"the {f}" for f in facts])  # "the language and the instrument"
        per_fact = f"one for {named}" if len(facts) == 1 else f"one each for {named}"
        out = (
            "; the model keeps the stage-0 encoder's classifier head, and the language model reads its "
            f"tag distributions as words: one token for the labels and {per_fact}, after the "
            "projector's tokens (`sslalm.models.tagger`; not in the paper)"
        )
        if settings.get("tag_scale", "word") == "audio":
            out += ", scaled to the norm of the projector's tokens"
        if settings.get("encoder_fact_net", 0) > 0:
            whose = f"the head's {join_and(facts)} " + ("comes" if len(facts) == 1 else "each come")
            out += (
                f"; {whose} from a small convolutional net on the fbank's 10 ms cepstra "
                f"({settings['encoder_fact_net']} channels, `sslalm.models.frame_net`), trained after stage 0"
            )
            if settings.get("encoder_fact_net_warp", 0.0) > 0:
                out += (
                    f" on draws whose mel axis is stretched by up to {settings['encoder_fact_net_warp']:.0%} "
                    "(other voices)"
                )
        elif settings.get("encoder_fact_probe", False):
            out += "; the head's language columns are a logistic regression on the cepstral statistics"
        temperature = settings.get("tag_fact_temperature")
        if temperature is not None:
            out += f"; the facts' distributions take a softmax temperature of {temperature:g}"
            if temperature < 1:
                out += ", so that their tokens lie near the likeliest value's word"
        if settings.get("lm_tag_prefix", False):
            out += "; the stage-0 LM reads every text after its clip's true tag tokens"
    draws = settings.get("task_draws") or {}
    if draws:
        named = ", ".join(f"{task} {factor:g} times" for task, factor in sorted(draws.items()))
        out += f"; records of these tasks are drawn more often: {named}"
    return out


def _compile_note(results: dict) -> list[str]:
    """The one-time kernel compile before each model's training, when there was one."""
    spent = {m["title"]: m["training"].get("kernel_compile_s", 0.0) for m in results["models"].values()}
    spent = {title: sec for title, sec in spent.items() if sec > 0}
    if not spent:
        return []
    named = "; ".join(f"{title} {sec:.1f} s" for title, sec in spent.items())
    return [
        f"Before the stages, the CPU scan kernels were compiled or loaded from numba's cache ({named}): a "
        "fresh install pays the compile once, and it is not in the training times above.",
        "",
    ]


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
        "## Baselines and generalisation",
        "",
        _table(*baseline_rows(results)),
        "",
        "Uniform chance guesses one of the label set's labels at random; the majority answer always gives "
        "the label that is right most often; the linear probe is scikit-learn's logistic regression on "
        "per-clip mean, standard deviation and maximum of the 128 fbank bins, trained on the training "
        "split's single-label clips (`sslalm.demo.baselines`); the reference captions row scores each "
        "test clip's canonical caption (what the corpus teaches for the caption prompt) as if a model had "
        "given it, the most any captioner can reach through that protocol here. The unseen-sources set "
        + _unseen_text(results)
        + " Its label set is every label of the corpus.",
        "",
        "## Open-ended questions: does the answer state the right fact?",
        "",
        _table(*fact_rows(results)),
        "",
        "Each open-ended test question's reference states one fact from a small vocabulary (a language, "
        "female or male, an instrument or its family, a number, labels in order, an event, a sound source, "
        "soft or loud). An answer is right when the first vocabulary term it names is the reference's (for "
        "order: the labels it names, in the same order); whole words, case-insensitive, longer terms first "
        "(`sslalm.data.corpus.facts`). Up to "
        f"{_facts_cap(results)} questions per fact, the same for every model.",
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
        f"the audio encoder learns the training clips' labels and {_facts_learnt(results['settings'])}"
        f"{_encoder_recipe(results['settings'])}. Then "
        "the curriculum of `configs/tiny/stage1..4.yaml` runs through `sslalm.train.load_config`, as "
        "`sslalm train` runs it (the parts each stage trains are in its name). Both models get the same "
        "departures from those files, set as overrides in `sslalm.demo.recipe.stage_overrides` and measured "
        "in `docs/demo.md`: steps, batch and learning rates from the schedule; the loss on the answer only; "
        "records drawn label-balanced; "
        "from stage 2 on, the stand-in language model's own weights train beside LoRA (the paper's LM is a "
        "pretrained 2.8B model that LoRA only steers; ours saw minutes of text)"
        f"{_frozen_encoder(results['settings'])}{_tag_tokens(results['settings'])}. "
        "The transformer differs only in its parts (AST, pooling projector, LLaMA).",
        "",
        _stage_table(results),
        "",
        *_compile_note(results),
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
    commands = model_commands(results)
    if commands:
        lines += ["## Try the trained ssLALM", "", "```", *commands, "```", ""]
    return "\n".join(lines)


def _unseen_text(results: dict) -> str:
    u = results.get("unseen")
    if not u:
        return "was not built."
    clips = ", ".join(f"{k} {v}" for k, v in u["clips"].items())
    skipped = f" (skipped: {', '.join(u['skipped'])})" if u.get("skipped") else ""
    return (
        f"(`{u['dir']}`: {clips}{skipped}) is made only from sources the corpus never uses: Flite voices, "
        "the TimGM6mb soundfont, the Yaru and Deepin sound themes, half of them through a random room and "
        "microphone (`sslalm.data.corpus.unseen`); it has no animals or telephones: the package registries "
        "hold no other telephone recordings, and the other animal recordings found (GCompris's) train the "
        "corpus."
    )


def _facts_cap(results: dict) -> int:
    from sslalm.demo.recipe import FACTS_PER_TASK

    return FACTS_PER_TASK


def write_outputs(results: dict, out_dir: str | os.PathLike) -> dict[str, Path]:
    """``results.json``, ``loss.png`` and ``report.md`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"results": out / "results.json", "plot": out / "loss.png", "report": out / "report.md"}
    paths["results"].write_text(json.dumps(results, indent=1), encoding="utf-8")
    plot_losses(results, paths["plot"])
    paths["report"].write_text(render_markdown(results), encoding="utf-8")
    return paths
