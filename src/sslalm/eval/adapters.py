"""The ten benchmark adapters: each reads one benchmark from its official release's layout on disk.

Every ``load_<name>(root, spec) -> Benchmark`` documents the layout it reads. Audio files are found by an
index of every audio file under the benchmark's folder (:class:`AudioIndex`), keyed by file stem, because the
YouTube-sourced sets (AudioSet, VGGSound, AudioCaps, DCASE2017) ship no audio and each download tool names
files its own way; each adapter lists the stems it tries. A malformed row is counted, a row whose audio is not
on disk is counted as skipped (:data:`~sslalm.eval.benchmark.MISSING_AUDIO`); a missing metadata file raises
:class:`~sslalm.eval.benchmark.DatasetNotFound`. Where ``docs/ltu.md`` says how LTU turned labels into text,
the adapter does the same (underscores to spaces etc.).
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from sslalm.eval.benchmark import (
    AUDIO_EXTENSIONS,
    MISSING_AUDIO,
    Benchmark,
    BenchmarkSpec,
    DatasetNotFound,
    EvalClip,
)


class AudioIndex:
    """Audio files under a folder, keyed by file stem; folders named in ``prefer`` win on duplicate stems."""

    def __init__(self, root: Path, prefer: Sequence[str] = ()):
        self.by_stem: dict[str, str] = {}
        dirs = [root / p for p in prefer if (root / p).is_dir()] + [root]
        for d in dirs:
            for dirpath, dirnames, filenames in os.walk(d):
                dirnames.sort()
                for f in sorted(filenames):
                    stem, ext = os.path.splitext(f)
                    if ext.lower() in AUDIO_EXTENSIONS:
                        self.by_stem.setdefault(stem, os.path.join(dirpath, f))

    def find(self, stems: Iterable[str]) -> str | None:
        for s in stems:
            if s in self.by_stem:
                return self.by_stem[s]
        return None


def _first_existing(root: Path, candidates: Sequence[str]) -> Path:
    for c in candidates:
        if (root / c).is_file():
            return root / c
    raise DatasetNotFound(f"none of {list(candidates)} under {root}")


def _add_clip(
    bench_clips: list[EvalClip], skipped: Counter, audio_id: str, path: str | None, refs: Sequence[str]
) -> None:
    if path is None or not os.path.isfile(path):
        skipped[MISSING_AUDIO] += 1
        return
    bench_clips.append(EvalClip(audio_id=audio_id, audio_path=path, references=tuple(refs)))


def _read_rows(path: Path, delimiter: str = ",", comment: str | None = None) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        lines = [ln for ln in f if not (comment and ln.lstrip().startswith(comment))]
    return [[c.strip() for c in row] for row in csv.reader(lines, delimiter=delimiter, skipinitialspace=True)]


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------------------
# Classification sets
# --------------------------------------------------------------------------------------------------------


def load_esc50(root: Path, spec: BenchmarkSpec) -> Benchmark:
    """ESC-50 (github.com/karolpiczak/ESC-50; the zip unpacks to ``ESC-50-master/``).

    Layout: ``meta/esc50.csv`` with header ``filename,fold,target,category,esc10,src_file,take`` (one row per
    clip, e.g. ``1-100032-A-0.wav,1,0,dog,True,100032,A``) and the clips in ``audio/``. All 2,000 clips are
    evaluated (LTU does the same; the set is zero-shot). Labels: ``category`` with ``_`` read as a space,
    ordered by ``target``.
    """
    rows = _read_rows(_first_existing(root, ["meta/esc50.csv"]))
    header, rows = rows[0], rows[1:]
    col = {name: i for i, name in enumerate(header)}
    if not {"filename", "target", "category"} <= col.keys():
        raise DatasetNotFound(f"{root}/meta/esc50.csv lacks filename/target/category columns")
    index = AudioIndex(root, prefer=["audio"])
    names: dict[int, str] = {}
    clips, skipped, malformed = [], Counter(), 0
    for row in rows:
        try:
            fname, target, category = row[col["filename"]], int(row[col["target"]]), row[col["category"]]
        except (IndexError, ValueError):
            malformed += 1
            continue
        if not fname or not category:
            malformed += 1
            continue
        label = category.replace("_", " ")
        names.setdefault(target, label)
        path = str(root / "audio" / fname)
        if not os.path.isfile(path):
            path = index.find([Path(fname).stem])
        _add_clip(clips, skipped, Path(fname).stem, path, [label])
    labels = [names[t] for t in sorted(names)]
    return spec.new(root, clips, labels, skipped=skipped, malformed=malformed)


# The 17 classes of DCASE2017 task 4 (as spelled in its ground-truth files).
DCASE2017_LABELS = (
    "Train horn",
    "Air horn, truck horn",
    "Car alarm",
    "Reversing beeps",
    "Bicycle",
    "Skateboard",
    "Ambulance (siren)",
    "Fire engine, fire truck (siren)",
    "Civil defense siren",
    "Police car (siren)",
    "Screaming",
    "Car",
    "Car passing by",
    "Bus",
    "Truck",
    "Motorcycle",
    "Train",
)


def load_dcase2017(root: Path, spec: BenchmarkSpec) -> Benchmark:
    """DCASE2017 task 4 ("Large-scale weakly supervised sound event detection for smart cars"), evaluation
    set.

    Layout: the ground truth release ``groundtruth_weak_label_evaluation_set.csv`` (at the top or in
    ``groundtruth_release/``; falls back to ``groundtruth_strong_label_evaluation_set.csv``):
    tab-separated, no header, CRLF line ends, ``filename<TAB>onset<TAB>offset<TAB>label`` with one row per
    (clip, label), e.g. ``-JMT0mK0Dbg_30.000_40.000.wav	30.000	40.000	Train horn``; 1,103 clips, 17
    classes, several labels per clip. The audio (``evaluation_set_formatted_audio_segments/``) names each
    clip ``Y`` + filename; stems tried: ``Y<stem>``, ``<stem>``. Scored with micro-F1 of the one-hot top
    label against the multi-hot truth.
    """
    gt = _first_existing(
        root,
        [
            "groundtruth_weak_label_evaluation_set.csv",
            "groundtruth_release/groundtruth_weak_label_evaluation_set.csv",
            "groundtruth_strong_label_evaluation_set.csv",
            "groundtruth_release/groundtruth_strong_label_evaluation_set.csv",
        ],
    )
    known = set(DCASE2017_LABELS)
    per_file: dict[str, list[str]] = {}
    malformed = 0
    for row in _read_rows(gt, delimiter="\t"):
        if not row or row == [""]:
            continue
        if len(row) < 4 or not row[0] or row[3] not in known:
            malformed += 1
            continue
        labels = per_file.setdefault(row[0], [])
        if row[3] not in labels:
            labels.append(row[3])
    index = AudioIndex(root, prefer=["evaluation_set_formatted_audio_segments"])
    clips, skipped = [], Counter()
    for fname, labels in per_file.items():
        stem = Path(fname).stem
        _add_clip(clips, skipped, stem, index.find([f"Y{stem}", stem]), labels)
    return spec.new(root, clips, DCASE2017_LABELS, skipped=skipped, malformed=malformed)


# VocalSound's classes: file-name suffix -> (AudioSet mid, display name) as in class_labels_indices_vs.csv.
VOCALSOUND_CLASSES = {
    "laughter": ("/m/01j3sz", "Laughter"),
    "sigh": ("/m/07plz5l", "Sigh"),
    "cough": ("/m/01b_21", "Cough"),
    "throatclearing": ("/m/0dl9sf8", "Throat clearing"),
    "sneeze": ("/m/01hsr_", "Sneeze"),
    "sniff": ("/m/07ppn3j", "Sniff"),
}


def load_vocalsound(root: Path, spec: BenchmarkSpec) -> Benchmark:
    """VocalSound (github.com/YuanGongND/vocalsound; ``vs_release_16k.zip``), test split.

    Layout: ``audio_16k/<spk>_<n>_<label>.wav`` (e.g. ``f0003_0_cough.wav``; also ``audio_44k/``),
    ``datafiles/te.json`` = ``{"data": [{"wav": <path>, "labels": <mid>}, ...]}`` (the test split; paths
    are the authors' absolute paths, so only the file name is used, looked up under ``audio_16k/`` first),
    ``class_labels_indices_vs.csv`` (``index,mid,display_name``), ``meta/te_meta.*`` (speakers). Labels: the
    display names (Laughter, Sigh, Cough, Throat clearing, Sneeze, Sniff); a row without a known mid takes the
    label from the file-name suffix.
    """
    te = _first_existing(root, ["datafiles/te.json"])
    mid_to_name = {mid: name for mid, name in VOCALSOUND_CLASSES.values()}
    label_csv = root / "class_labels_indices_vs.csv"
    if label_csv.is_file():
        rows = _read_rows(label_csv)
        for row in rows[1:]:
            if len(row) >= 3 and row[1]:
                mid_to_name[row[1]] = row[2]
    suffix_to_name = {k: mid_to_name.get(mid, name) for k, (mid, name) in VOCALSOUND_CLASSES.items()}
    try:
        data = json.loads(te.read_text(encoding="utf-8"))["data"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DatasetNotFound(f"{te} is not a VocalSound datafile: {exc}") from exc
    index = AudioIndex(root, prefer=["audio_16k"])
    clips, skipped, malformed = [], Counter(), 0
    for item in data:
        wav = item.get("wav") if isinstance(item, dict) else None
        if not wav:
            malformed += 1
            continue
        stem = Path(wav).stem
        label = mid_to_name.get(str(item.get("labels", "")).split(",")[0])
        if label is None:
            label = suffix_to_name.get(stem.rsplit("_", 1)[-1])
        if label is None:
            malformed += 1
            continue
        _add_clip(clips, skipped, stem, index.find([stem]), [label])
    labels = list(dict.fromkeys(suffix_to_name.values()))
    return spec.new(root, clips, labels, skipped=skipped, malformed=malformed)


TUT2017_LABELS = (
    "beach",
    "bus",
    "cafe/restaurant",
    "car",
    "city_center",
    "forest_path",
    "grocery_store",
    "home",
    "library",
    "metro_station",
    "office",
    "park",
    "residential_area",
    "train",
    "tram",
)


def load_tut2017(root: Path, spec: BenchmarkSpec) -> Benchmark:
    """TUT Acoustic Scenes 2017, evaluation set (``TUT-acoustic-scenes-2017-evaluation/``, DCASE2017 task 1).

    Layout: ``evaluation_setup/evaluate.txt`` (or, from the released meta package, ``meta.txt``):
    tab-separated, no header, ``audio/<n>.wav<TAB><scene>[<TAB>...]``; the clips in ``audio/``. 15 scenes
    (``beach``, ``cafe/restaurant``, ``city_center`` ...); ``_`` is read as a space, as LTU does.
    """
    meta = _first_existing(root, ["evaluation_setup/evaluate.txt", "meta.txt"])
    known = set(TUT2017_LABELS)
    index = AudioIndex(root, prefer=["audio"])
    clips, skipped, malformed, seen = [], Counter(), 0, set()
    for row in _read_rows(meta, delimiter="\t"):
        if not row or row == [""]:
            continue
        if len(row) < 2 or not row[0] or row[1] not in known:
            malformed += 1
            continue
        if row[0] in seen:
            continue
        seen.add(row[0])
        path = str(root / row[0])
        if not os.path.isfile(path):
            path = index.find([Path(row[0]).stem])
        _add_clip(clips, skipped, Path(row[0]).stem, path, [row[1].replace("_", " ")])
    labels = [lab.replace("_", " ") for lab in TUT2017_LABELS]
    return spec.new(root, clips, labels, skipped=skipped, malformed=malformed)


BEIJING_OPERA_LABELS = ("bangu", "naobo", "daluo", "xiaoluo")


def load_beijing_opera(root: Path, spec: BenchmarkSpec) -> Benchmark:
    """Beijing Opera Percussion Instrument Dataset (Tian et al., 2014; CompMusic/Zenodo).

    Layout: one folder per instrument class, ``bangu/`` (clapper-drum), ``naobo/`` (cymbals), ``daluo/``
    (large gong), ``xiaoluo/`` (small gong), each holding the single-stroke ``.wav`` files (236 in all). The
    class folders may sit at the top or one level down; folder names are matched case-insensitively. All
    clips are evaluated (the set has no split). Audio id: ``<class>/<stem>``.
    """
    class_dirs: dict[str, Path] = {}
    for parent in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        for d in sorted(p for p in parent.iterdir() if p.is_dir()):
            name = d.name.lower()
            if name in BEIJING_OPERA_LABELS and name not in class_dirs:
                class_dirs[name] = d
    if not class_dirs:
        raise DatasetNotFound(f"no bangu/naobo/daluo/xiaoluo folders under {root}")
    clips, skipped = [], Counter()
    for label in BEIJING_OPERA_LABELS:
        d = class_dirs.get(label)
        if d is None:
            continue
        for dirpath, dirnames, filenames in os.walk(d):
            dirnames.sort()
            for f in sorted(filenames):
                if os.path.splitext(f)[1].lower() in AUDIO_EXTENSIONS:
                    rel = os.path.relpath(os.path.join(dirpath, f), d)
                    _add_clip(
                        clips,
                        skipped,
                        f"{label}/{os.path.splitext(rel)[0]}",
                        os.path.join(dirpath, f),
                        [label],
                    )
    return spec.new(root, clips, BEIJING_OPERA_LABELS, skipped=skipped)


def load_vggsound(root: Path, spec: BenchmarkSpec) -> Benchmark:
    """VGGSound (robots.ox.ac.uk/~vgg/data/vggsound), test split.

    Layout: ``vggsound.csv``, no header, ``youtube_id,start_seconds,label,split`` (e.g.
    ``---g-f_I2yQ,1,people marching,test``; labels with commas are quoted); 309 classes, the label set is
    every label in the file. The release names clips ``video/<ytid>_<start:06d>.mp4``; audio must be
    extracted to wav/flac/ogg/mp3 (any folder under the root). Stems tried: ``<ytid>_<start:06d>``,
    ``<ytid>_<start>``, ``<ytid>_<start>_<start+10>``, ``<ytid>``.
    """
    rows = _read_rows(_first_existing(root, ["vggsound.csv"]))
    index = AudioIndex(root)
    labels: dict[str, None] = {}
    clips, skipped, malformed = [], Counter(), 0
    for row in rows:
        if not row or row == [""]:
            continue
        start = _float(row[1]) if len(row) >= 4 else None
        if len(row) < 4 or not row[0] or not row[2] or start is None:
            malformed += 1
            continue
        labels.setdefault(row[2], None)
        if row[3] != "test":
            continue
        ytid, s = row[0], int(start)
        audio_id = f"{ytid}_{s:06d}"
        stems = [audio_id, f"{ytid}_{s}", f"{ytid}_{s}_{s + 10}", ytid]
        _add_clip(clips, skipped, audio_id, index.find(stems), [row[2]])
    return spec.new(root, clips, list(labels), skipped=skipped, malformed=malformed)


def load_fsd50k(root: Path, spec: BenchmarkSpec) -> Benchmark:
    """FSD50K (Zenodo 4060432), evaluation split.

    Layout: ``FSD50K.ground_truth/eval.csv`` with header ``fname,labels,mids`` (labels and mids are quoted,
    comma-separated, e.g. ``37199,"Electric_guitar,Guitar,...","/m/02sgy,..."``),
    ``FSD50K.ground_truth/vocabulary.csv`` without header, ``index,label,mid`` (200 classes), clips in
    ``FSD50K.eval_audio/<fname>.wav``. Labels: ``_`` read as a space. Scored with mAP over the 200 classes.
    """
    gt = _first_existing(root, ["FSD50K.ground_truth/eval.csv", "ground_truth/eval.csv", "eval.csv"])
    vocab_path = gt.parent / "vocabulary.csv"
    if not vocab_path.is_file():
        raise DatasetNotFound(f"{vocab_path} not found")
    vocab: dict[str, str] = {}
    for row in _read_rows(vocab_path):
        if len(row) >= 2 and row[1]:
            vocab[row[1]] = row[1].replace("_", " ")
    rows = _read_rows(gt)
    header, rows = rows[0], rows[1:]
    col = {name: i for i, name in enumerate(header)}
    if not {"fname", "labels"} <= col.keys():
        raise DatasetNotFound(f"{gt} lacks fname/labels columns")
    index = AudioIndex(root, prefer=["FSD50K.eval_audio"])
    clips, skipped, malformed = [], Counter(), 0
    for row in rows:
        if not row or row == [""]:
            continue
        try:
            fname, raw = row[col["fname"]], [x.strip() for x in row[col["labels"]].split(",")]
        except IndexError:
            malformed += 1
            continue
        if not fname or not raw or any(x not in vocab for x in raw):
            malformed += 1
            continue
        _add_clip(clips, skipped, fname, index.find([fname]), [vocab[x] for x in raw])
    return spec.new(root, clips, list(vocab.values()), skipped=skipped, malformed=malformed)


def load_audioset(root: Path, spec: BenchmarkSpec) -> Benchmark:
    """AudioSet evaluation segments (research.google.com/audioset/download.html).

    Layout: ``eval_segments.csv``: three ``#`` comment lines, then ``YTID, start_seconds, end_seconds,
    positive_labels`` rows with ", " separators and the mids quoted (e.g. ``--4gqARaEJE, 0.000, 10.000,
    "/m/068hy,/m/07q6cd_,/m/0bt9lr,/m/0jbk"``); ``class_labels_indices.csv`` with header
    ``index,mid,display_name`` (527 classes). Google ships no audio; stems tried (any folder under the root):
    ``Y<ytid>``, ``<ytid>``, ``<ytid>_<start:.3f>_<end:.3f>``, ``Y<ytid>_<start:.3f>_<end:.3f>``,
    ``<ytid>_<int start>``. Labels: ``display_name``. Scored with mAP.
    """
    seg = _first_existing(root, ["eval_segments.csv", "metadata/eval_segments.csv"])
    cls = _first_existing(root, ["class_labels_indices.csv", "metadata/class_labels_indices.csv"])
    rows = _read_rows(cls)
    mid_to_name = {r[1]: r[2] for r in rows[1:] if len(r) >= 3 and r[1]}
    index = AudioIndex(root)
    clips, skipped, malformed = [], Counter(), 0
    for row in _read_rows(seg, comment="#"):
        if not row or row == [""]:
            continue
        start = _float(row[1]) if len(row) >= 4 else None
        end = _float(row[2]) if len(row) >= 4 else None
        mids = [m.strip() for m in row[3].split(",")] if len(row) >= 4 else []
        if not row[0] or start is None or end is None or not mids or any(m not in mid_to_name for m in mids):
            malformed += 1
            continue
        ytid = row[0]
        span = f"{start:.3f}_{end:.3f}"
        stems = [f"Y{ytid}", ytid, f"{ytid}_{span}", f"Y{ytid}_{span}", f"{ytid}_{int(start)}"]
        _add_clip(clips, skipped, ytid, index.find(stems), [mid_to_name[m] for m in mids])
    return spec.new(root, clips, list(mid_to_name.values()), skipped=skipped, malformed=malformed)


# --------------------------------------------------------------------------------------------------------
# Captioning sets
# --------------------------------------------------------------------------------------------------------


def load_audiocaps(root: Path, spec: BenchmarkSpec) -> Benchmark:
    """AudioCaps (github.com/cdjkim/audiocaps, ``dataset/test.csv``), test split.

    Layout: ``test.csv`` (at the top or in ``dataset/``) with header ``audiocap_id,youtube_id,start_time,
    caption``, one row per caption: 5 captions per clip (975 clips in v1). Clips are grouped by
    (youtube_id, start_time); all their captions are the references. AudioCaps ships no audio; stems tried
    (any folder under the root): ``<ytid>``, ``Y<ytid>``, ``<ytid>_<start>``,
    ``Y<ytid>_<start:.3f>_<end:.3f>``, ``<ytid>_<start:.3f>_<end:.3f>`` (end = start + 10), then each row's
    ``audiocap_id``.
    """
    rows = _read_rows(_first_existing(root, ["test.csv", "dataset/test.csv"]))
    header, rows = rows[0], rows[1:]
    col = {name: i for i, name in enumerate(header)}
    if not {"youtube_id", "start_time", "caption"} <= col.keys():
        raise DatasetNotFound("test.csv lacks youtube_id/start_time/caption columns")
    groups: dict[tuple[str, int], tuple[list[str], list[str]]] = {}
    malformed = 0
    for row in rows:
        if not row or row == [""]:
            continue
        try:
            ytid, start, caption = row[col["youtube_id"]], _float(row[col["start_time"]]), row[col["caption"]]
            cap_id = row[col["audiocap_id"]] if "audiocap_id" in col else ""
        except IndexError:
            malformed += 1
            continue
        if not ytid or start is None or not caption:
            malformed += 1
            continue
        caps, ids = groups.setdefault((ytid, int(start)), ([], []))
        caps.append(caption)
        ids.append(cap_id)
    index = AudioIndex(root)
    clips, skipped = [], Counter()
    for (ytid, start), (caps, ids) in groups.items():
        span = f"{float(start):.3f}_{float(start + 10):.3f}"
        stems = [ytid, f"Y{ytid}", f"{ytid}_{start}", f"Y{ytid}_{span}", f"{ytid}_{span}", *ids]
        _add_clip(clips, skipped, f"{ytid}_{start}", index.find(stems), caps)
    return spec.new(root, clips, skipped=skipped, malformed=malformed)


def load_clotho(root: Path, spec: BenchmarkSpec) -> Benchmark:
    """Clotho v2 (Zenodo 4783391), evaluation split.

    Layout: ``clotho_captions_evaluation.csv`` with header ``file_name,caption_1,...,caption_5`` (file names
    contain spaces and commas, so they are quoted), clips in ``evaluation/`` (``clotho_audio_evaluation.7z``
    unpacks to it; 1,045 clips). All five captions are the references.
    """
    rows = _read_rows(_first_existing(root, ["clotho_captions_evaluation.csv"]))
    header, rows = rows[0], rows[1:]
    col = {name: i for i, name in enumerate(header)}
    cap_cols = [i for name, i in col.items() if name.startswith("caption_")]
    if "file_name" not in col or not cap_cols:
        raise DatasetNotFound("clotho_captions_evaluation.csv lacks file_name/caption_N columns")
    index = AudioIndex(root, prefer=["evaluation"])
    clips, skipped, malformed = [], Counter(), 0
    for row in rows:
        if not row or row == [""]:
            continue
        if len(row) != len(header) or not row[col["file_name"]]:
            malformed += 1
            continue
        caps = [row[i] for i in cap_cols if row[i]]
        if not caps:
            malformed += 1
            continue
        fname = row[col["file_name"]]
        path = str(root / "evaluation" / fname)
        if not os.path.isfile(path):
            path = index.find([Path(fname).stem])
        _add_clip(clips, skipped, fname, path, caps)
    return spec.new(root, clips, skipped=skipped, malformed=malformed)
