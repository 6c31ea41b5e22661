"""The local corpus (``sslalm corpus build``) as benchmarks for the Table I protocol.

A corpus folder has ``test_cla.json`` / ``val_cla.json``: one entry per clip with its label(s) and reference
captions. Three benchmarks are made from a split (names get the split as suffix, e.g. ``local_cla_test``):

- ``local_cla``: classification, accuracy, the paper's prompt (``Close-ended question: Write an audio
  caption describing the sound.``), scored by text-embedding similarity against the split's label set
  (``labels.json``), exactly as ESC-50 is;
- ``local_cap``: captioning, caption metrics against the clip's reference captions. It uses the same
  prompt, because the paper's classification prompt *is* a caption request: one answer per clip serves
  both (``share_answers`` copies them), as LTU scores classification by captioning;
- ``local_label``: classification with the corpus's own label question (``Closed-ended question: What sound
  class does this audio belong to?``), which the model was trained on; the same scoring.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from sslalm.eval.benchmark import Benchmark, EvalClip
from sslalm.eval.datasets import CLASSIFICATION_PROMPT

logger = logging.getLogger(__name__)

LABEL_PROMPT = "Closed-ended question: What sound class does this audio belong to?"
KINDS = ("cla", "cap", "label")


def load_local(corpus_dir: str | os.PathLike, split: str = "test", kinds=KINDS) -> list[Benchmark]:
    """Benchmarks of one split of a corpus folder (see the module docstring); clips whose audio is missing
    are left out and counted in ``skipped``."""
    root = Path(corpus_dir)
    entries = json.loads((root / f"{split}_cla.json").read_text(encoding="utf-8"))
    labels = json.loads((root / "labels.json").read_text(encoding="utf-8"))["cla"][split]
    unknown = sorted({k for k in kinds} - set(KINDS))
    if unknown:
        raise ValueError(f"unknown local benchmark kinds {unknown}; choose from {KINDS}")
    label_clips, caption_clips, skipped = [], [], 0
    for e in entries:
        path = root / e["audio_id"]
        if not path.is_file():
            skipped += 1
            continue
        label_clips.append(EvalClip(e["audio_id"], str(path), tuple(e["labels"])))
        caption_clips.append(EvalClip(e["audio_id"], str(path), tuple(e["captions"])))
    out = []
    for kind in kinds:
        common = dict(
            name=f"local_{kind}_{split}",
            column=f"{kind}-{split}",
            root=str(root),
            labels=list(labels) if kind != "cap" else [],
        )
        if kind == "cap":
            bench = Benchmark(
                task="captioning", metric="spice", prompt=CLASSIFICATION_PROMPT, clips=caption_clips, **common
            )
        else:
            prompt = CLASSIFICATION_PROMPT if kind == "cla" else LABEL_PROMPT
            bench = Benchmark(task="classification", metric="acc", prompt=prompt, clips=label_clips, **common)
        if skipped:
            bench.skipped["audio file not found"] = skipped
        out.append(bench)
    return out


def share_answers(source: Path, target: Path, references: dict[str, tuple[str, ...]]) -> int:
    """Copy the answers of ``source`` (a runner JSONL) into ``target`` with other references, for a second
    benchmark asked with the same prompt about the same clips; returns how many were copied."""
    from sslalm.eval.scoring import read_predictions

    done = read_predictions(target)
    n = 0
    with open(target, "a", encoding="utf-8") as f:
        for audio_id, rec in read_predictions(source).items():
            if audio_id in done or audio_id not in references:
                continue
            f.write(json.dumps({**rec, "references": list(references[audio_id])}, ensure_ascii=False) + "\n")
            n += 1
    return n
