"""OpenAQA-format question-answer datasets: records → (fbank, tokenised prompt + answer) training examples.

A data file is a JSON list of records or JSONL (one record per line). Every record has the six string fields
``instruction``, ``input``, ``audio_id``, ``dataset``, ``task`` and ``output`` (``docs/ltu.md``);
``audio_id`` is an absolute path or a path relative to the data file's folder.

Bad data never stops a long run unless asked to: a malformed record (bad JSON line, missing or non-string
field, empty instruction or answer) or a missing audio file is skipped when the files are read, a clip that
fails to decode is skipped when it is first loaded (the next record takes its place), and the counts and the
first few reasons are logged. ``strict=True`` raises ``DatasetError`` at the first problem instead, naming the
file and the record. ``check_audio="decode"`` decodes every clip up front, so that no failure is left for
training time (fine for small sets; OpenAQA has a million clips).

Audio is loaded with ``sslalm.audio.load_audio`` (mono, 16 kHz) and cut to ``crop_seconds`` (10.24 s: a random
crop in training, deterministic in seed, epoch and index so a resumed run sees the same crops; a centre crop
for evaluation); the model's processor (``sslalm.models.processor.SSLALMProcessor``) turns the crop and the
record's text into a training example (a ``(1024, 128)`` fbank, token ids and labels) and collates batches.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from sslalm.audio import SAMPLE_RATE
from sslalm.models.processor import SSLALMProcessor
from sslalm.prompt import CUTOFF_LEN

logger = logging.getLogger(__name__)

FIELDS = ("instruction", "input", "audio_id", "dataset", "task", "output")
CROP_SECONDS = 10.24
MAX_REASONS = 5  # how many skip reasons are logged in full


class DatasetError(ValueError):
    """A data file or record cannot be used (raised at once in strict mode, or for an unreadable file)."""


@dataclass(frozen=True)
class QARecord:
    """One checked record; ``audio_path`` is resolved to an absolute path; ``where`` names it in messages."""

    instruction: str
    input: str
    audio_path: str
    dataset: str
    task: str
    output: str
    where: str


def iter_raw_records(path: str | os.PathLike) -> Iterator[tuple[str, Any]]:
    """Yield ``(where, record)`` for every record of a JSON-list or JSONL file.

    ``where`` is ``"<file>: record <i>"`` (plus the line number for JSONL). A JSONL line that is not valid
    JSON is yielded as a ``DatasetError`` instance so the caller can count and skip it; a JSON file that
    cannot be parsed at all raises ``DatasetError``.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            head = fh.read(4096).lstrip()
            fh.seek(0)
            if head.startswith("["):
                try:
                    data = json.load(fh)
                except json.JSONDecodeError as err:
                    raise DatasetError(f"{path}: not valid JSON ({err})") from err
                for i, record in enumerate(data):
                    yield f"{path}: record {i}", record
                return
            index = 0
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                where = f"{path}: record {index} (line {lineno})"
                index += 1
                try:
                    yield where, json.loads(line)
                except json.JSONDecodeError as err:
                    yield where, DatasetError(f"not valid JSON ({err.msg} at column {err.colno})")
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"cannot read data file {path}: {err}") from err


def check_record(record: Any, base_dir: str, where: str) -> QARecord:
    """Validate one raw record and resolve its audio path; raises ``DatasetError`` saying what is wrong."""
    if isinstance(record, DatasetError):
        raise record
    if not isinstance(record, dict):
        raise DatasetError(f"expected a JSON object, got {type(record).__name__}")
    missing = [k for k in FIELDS if k not in record]
    if missing:
        raise DatasetError(f"missing field(s) {missing}")
    wrong = [k for k in FIELDS if not isinstance(record[k], str)]
    if wrong:
        raise DatasetError(f"field(s) {wrong} must be strings")
    empty = [k for k in ("instruction", "audio_id", "output") if not record[k].strip()]
    if empty:
        raise DatasetError(f"empty field(s) {empty}")
    audio = os.path.expanduser(record["audio_id"])
    if not os.path.isabs(audio):
        audio = os.path.join(base_dir, audio)
    return QARecord(
        instruction=record["instruction"],
        input=record["input"],
        audio_path=os.path.normpath(audio),
        dataset=record["dataset"],
        task=record["task"],
        output=record["output"],
        where=where,
    )


class SkipLog:
    """Counts skipped records by kind and keeps the first few reasons for the log."""

    def __init__(self, max_reasons: int = MAX_REASONS):
        self.counts: Counter[str] = Counter()
        self.reasons: list[str] = []
        self.max_reasons = max_reasons

    def add(self, kind: str, where: str, reason: str) -> None:
        self.counts[kind] += 1
        if len(self.reasons) < self.max_reasons:
            self.reasons.append(f"{where}: {reason}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def log(self, kept: int) -> None:
        if not self.total:
            return
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts.items()))
        logger.warning(
            "skipped %d record(s) (%s); kept %d. First reasons:\n  %s",
            self.total,
            kinds,
            kept,
            "\n  ".join(self.reasons),
        )


def load_records(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    tasks: Iterable[str] | None = None,
    strict: bool = False,
    check_audio: str = "exists",
    skips: SkipLog | None = None,
) -> list[QARecord]:
    """Read, validate and filter the records of one or more data files.

    Args:
        paths: a data file or a list of them (JSON list or JSONL).
        tasks: keep only records whose ``task`` is one of these (curriculum stages); None keeps all.
        strict: raise ``DatasetError`` on the first bad record or missing/unreadable clip.
        check_audio: ``"exists"`` (the file must exist) or ``"decode"`` (it must also decode).
        skips: where skipped records are counted (a new ``SkipLog`` if None); logged at the end.
    """
    if check_audio not in ("exists", "decode"):
        raise ValueError(f"check_audio must be 'exists' or 'decode', got {check_audio!r}")
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not paths:
        raise ValueError("no data files given")
    wanted = set(tasks) if tasks is not None else None
    skips = skips if skips is not None else SkipLog()
    audio_ok: dict[str, tuple[str, str] | None] = {}  # path -> None if usable, else (kind, reason)
    records: list[QARecord] = []
    filtered = 0

    def skip(kind: str, where: str, reason: str) -> None:
        if strict:
            raise DatasetError(f"{where}: {reason}")
        skips.add(kind, where, reason)

    for path in paths:
        base_dir = os.path.dirname(os.path.abspath(os.fspath(path)))
        progress = tqdm(iter_raw_records(path), desc=f"reading {path}", unit=" rec", disable=None)
        for where, raw in progress:
            try:
                rec = check_record(raw, base_dir, where)
            except DatasetError as err:
                skip("malformed", where, str(err))
                continue
            if wanted is not None and rec.task not in wanted:
                filtered += 1
                continue
            if rec.audio_path not in audio_ok:
                audio_ok[rec.audio_path] = _audio_problem(rec.audio_path, check_audio)
            problem = audio_ok[rec.audio_path]
            if problem is not None:
                skip(problem[0], where, problem[1])
                continue
            records.append(rec)
    if wanted is not None:
        logger.info("task filter %s: kept %d record(s), left out %d", sorted(wanted), len(records), filtered)
    skips.log(kept=len(records))
    return records


def _audio_problem(path: str, check_audio: str) -> tuple[str, str] | None:
    """None if the clip is usable, else ``(kind, reason)``."""
    if not os.path.isfile(path):
        return "missing audio", f"audio file {path} does not exist"
    if check_audio == "decode":
        from sslalm.audio import AudioError, load_audio

        try:
            load_audio(path)
        except (AudioError, OSError) as err:
            return "unreadable audio", f"cannot decode audio {path}: {err}"
    return None


class OpenAQADataset(Dataset):
    """OpenAQA records as training examples ``{"fbank": (T, 128), "input_ids", "attention_mask", "labels"}``.

    Args:
        paths: data file(s), JSON list or JSONL.
        feature_extractor, tokenizer: the model's training-crop fbank extractor (waveform (16 kHz) →
            ``(T, 128)``, e.g. ``FbankExtractor(target_length=1024)``) and tokenizer (with EOS), from which
            the dataset's processor is built; or pass ``processor`` instead.
        tasks: keep only these ``task`` values (None: all).
        strict: fail on the first bad record or clip (``DatasetError`` naming it) instead of skipping it.
        crop_seconds: longest audio kept (10.24 s = 1024 frames); None keeps all of it.
        seed: seed of the random crops.
        train: random crops (training) or centre crops (evaluation).
        cutoff_len, train_on_inputs: text cut and loss masking, see ``sslalm.prompt.tokenize_example``
            (ignored when a ``processor`` is given: its own settings apply).
        check_audio: ``"exists"`` or ``"decode"`` (decode every clip up front).
        processor: an ``SSLALMProcessor`` (e.g. ``SSLALMProcessor.from_config(model.config, model.tokenizer,
            cutoff_len=...)``) instead of ``feature_extractor`` and ``tokenizer``.
        audio_cache_bytes: decoded clips kept in memory (``sslalm.audio.WaveformCache``; 0: decode every
            draw), since a clip's records and epochs draw it many times.

    The dataset's ``processor`` is also the collator of its examples (``DataLoader(collate_fn=...)``).
    """

    def __init__(
        self,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        feature_extractor: Callable[..., torch.Tensor] | None = None,
        tokenizer: Any = None,
        tasks: Iterable[str] | None = None,
        strict: bool = False,
        crop_seconds: float | None = CROP_SECONDS,
        seed: int = 0,
        train: bool = True,
        cutoff_len: int = CUTOFF_LEN,
        train_on_inputs: bool = True,
        check_audio: str = "exists",
        processor: SSLALMProcessor | None = None,
        audio_cache_bytes: int = 1 << 30,
    ):
        from sslalm.audio import WaveformCache

        if processor is None:
            if feature_extractor is None or tokenizer is None:
                raise ValueError("pass a processor, or a feature_extractor and a tokenizer")
            processor = SSLALMProcessor(
                tokenizer,
                cutoff_len=cutoff_len,
                train_on_inputs=train_on_inputs,
                feature_extractor=feature_extractor,
            )
        self.processor = processor
        self.skips = SkipLog()
        self.records = load_records(
            paths, tasks=tasks, strict=strict, check_audio=check_audio, skips=self.skips
        )
        if not self.records:
            raise DatasetError(f"no usable records in {paths} (tasks={tasks}); see the warnings above")
        self.strict = strict
        self.crop_samples = None if crop_seconds is None else round(crop_seconds * SAMPLE_RATE)
        self.seed = seed
        self.train = train
        self.epoch = 0
        self.load_failures = 0  # clips that failed to decode at load time (in this process)
        self.audio = WaveformCache(audio_cache_bytes)

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Choose the random crops of this epoch (called by the training loop)."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        from sslalm.audio import AudioError

        for attempt in range(len(self.records)):
            i = (index + attempt) % len(self.records)
            rec = self.records[i]
            try:
                waveform = self.audio.load(rec.audio_path)  # (N,) mono float32 @ 16 kHz
                break
            except (AudioError, OSError) as err:
                if self.strict:
                    raise DatasetError(f"{rec.where}: cannot load audio {rec.audio_path}: {err}") from err
                self.load_failures += 1
                if self.load_failures <= MAX_REASONS:
                    logger.warning(
                        "%s: cannot load audio %s (%s); using the next record", rec.where, rec.audio_path, err
                    )
        else:
            raise DatasetError("no clip of this dataset could be loaded")
        return self.processor.training_example(self.crop(waveform, i), rec.instruction, rec.input, rec.output)

    def crop(self, waveform: torch.Tensor, index: int) -> torch.Tensor:
        """At most ``crop_seconds`` of audio: a seeded random window in training, the centre in evaluation."""
        return crop_window(
            waveform, self.crop_samples, [self.seed, self.epoch, index] if self.train else None
        )


def crop_window(waveform: torch.Tensor, n: int | None, key: Sequence[int] | None) -> torch.Tensor:
    """At most ``n`` samples of ``waveform`` (..., N): a random window drawn from
    ``numpy.random.default_rng(key)``, or the centre when ``key`` is None; shorter input is returned whole."""
    if n is None or waveform.shape[-1] <= n:
        return waveform
    slack = waveform.shape[-1] - n
    start = slack // 2 if key is None else int(np.random.default_rng(list(key)).integers(0, slack + 1))
    return waveform[..., start : start + n]
