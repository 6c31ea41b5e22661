"""Caption metrics (AudioCaps, Clotho) through pycocoevalcap: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, SPICE,
SPIDEr.

The paper (after LTU, ``docs/ltu.md``) reports SPICE; the other metrics are what audio captioning papers
usually print. As in coco-caption, every caption (prediction and references) is first PTB-tokenised
(lower-cased, punctuation dropped) and all scorers see the tokenised text; several references per clip are
used as they are (AudioCaps and Clotho have five).

Facts that shape this module (checked in the installed pycocoevalcap 1.2):

- ``pycocoevalcap.cider.Cider`` *is* CIDEr-D: it clips hypothesis n-gram counts by the reference's, applies
  the Gaussian length penalty (sigma 6), averages over references and scales by 10. We label it "CIDEr-D".
- ``Meteor()`` starts a JVM that loads a paraphrase table (about 16 s), so one instance is made per
  :func:`score_captions` call, never per clip.
- The PTB tokenizer and METEOR need ``java``. Without it, a Python tokenizer (lower-case, split off
  punctuation, drop it) is used and METEOR is reported as not run; BLEU, ROUGE-L and CIDEr-D are pure Python.
- ``Spice()`` downloads Stanford CoreNLP 3.6.0 into its package folder on first use, which cannot work
  offline. SPICE therefore runs only when ``stanford-corenlp-3.6.0.jar`` and
  ``stanford-corenlp-3.6.0-models.jar`` are already in pycocoevalcap's ``spice/lib/`` or in a folder given
  by ``--spice-corenlp DIR`` / the ``SPICE_CORENLP_DIR`` environment variable (they are then linked, or
  copied, into ``spice/lib/`` so that pycocoevalcap never tries the download). Otherwise SPICE and SPIDEr
  (= (CIDEr-D + SPICE) / 2) are reported as not run, with the reason.

Known difference from LTU: LTU sampled five answers per clip and averaged SPICE over five "trials"; we score
one answer per clip.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
CORENLP_ZIP_FOLDER = "stanford-corenlp-full-2015-12-09"
METRICS = ("BLEU", "METEOR", "ROUGE-L", "CIDEr-D", "SPICE")

# Tokens PTBTokenizer output that pycocoevalcap drops (its PUNCTUATIONS list).
_PTB_PUNCT = {
    "''",
    "'",
    "``",
    "`",
    "-LRB-",
    "-RRB-",
    "-LCB-",
    "-RCB-",
    ".",
    "?",
    "!",
    ",",
    ":",
    "-",
    "--",
    "...",
    ";",
}
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|'[a-z]+|[^\sa-z0-9]")


@dataclass
class CaptionScores:
    """Corpus-level caption scores (BLEU/METEOR/ROUGE-L/SPICE/SPIDEr in [0, 1], CIDEr-D in [0, 10])."""

    scores: dict[str, float] = field(default_factory=dict)
    not_run: dict[str, str] = field(default_factory=dict)  # metric -> reason
    tokenizer: str = ""
    n: int = 0

    def to_dict(self) -> dict:
        return {"scores": self.scores, "not_run": self.not_run, "tokenizer": self.tokenizer, "n": self.n}


def java_path() -> str | None:
    """The ``java`` executable on PATH, if any."""
    return shutil.which("java")


def python_tokenize(text: str) -> str:
    """Dependency-free stand-in for PTB tokenisation: lower-case, split punctuation off words, drop it."""
    tokens = _TOKEN.findall(text.lower().replace("\n", " "))
    return " ".join(t for t in tokens if t not in _PTB_PUNCT and re.search(r"[a-z0-9]", t))


def _tokenize(captions: dict[int, list[str]], use_ptb: bool) -> tuple[dict[int, list[str]], str]:
    if use_ptb:
        try:
            from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

            out = PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})
            for k, v in captions.items():  # an empty last caption can lose its output line: pad it back
                got = out.setdefault(k, [])
                got.extend([""] * (len(v) - len(got)))
            return out, "ptb"
        except (OSError, subprocess.SubprocessError) as exc:
            logger.warning("PTB tokenizer failed (%s); using the Python tokenizer", exc)
    return {k: [python_tokenize(c) for c in v] for k, v in captions.items()}, "python"


def _spice_lib_dir() -> Path:
    import pycocoevalcap.spice as spice_pkg

    return Path(spice_pkg.__file__).resolve().parent / "lib"


def find_corenlp_jars(directory: str | os.PathLike) -> dict[str, Path]:
    """The CoreNLP 3.6.0 jars found in ``directory`` (or its ``stanford-corenlp-full-2015-12-09/``)."""
    found = {}
    for d in (Path(directory), Path(directory) / CORENLP_ZIP_FOLDER):
        for jar in CORENLP_JARS:
            if jar not in found and (d / jar).is_file():
                found[jar] = d / jar
    return found


def install_corenlp_jars(
    corenlp_dir: str | os.PathLike, lib_dir: str | os.PathLike | None = None
) -> str | None:
    """Put the CoreNLP jars where pycocoevalcap's SPICE expects them; return None when ready, else the
    reason."""
    lib = Path(lib_dir) if lib_dir is not None else _spice_lib_dir()
    if all((lib / j).is_file() for j in CORENLP_JARS):
        return None
    found = find_corenlp_jars(corenlp_dir)
    missing = [j for j in CORENLP_JARS if j not in found]
    if missing:
        return f"{corenlp_dir} lacks {', '.join(missing)}"
    try:
        lib.mkdir(parents=True, exist_ok=True)
        for jar, src in found.items():
            dst = lib / jar
            if dst.is_file():
                continue
            if dst.is_symlink():  # a dangling link from an earlier install
                dst.unlink()
            try:
                os.symlink(src.resolve(), dst)
            except OSError:
                shutil.copy2(src, dst)
    except OSError as exc:
        return f"cannot place the CoreNLP jars in {lib}: {exc}"
    logger.info("linked Stanford CoreNLP jars from %s into %s", corenlp_dir, lib)
    return None


def spice_unavailable_reason(corenlp_dir: str | os.PathLike | None = None) -> str | None:
    """None when SPICE can run offline; otherwise why not (java or CoreNLP jars missing)."""
    if java_path() is None:
        return "java not found on PATH (SPICE needs Java 8+)"
    lib = _spice_lib_dir()
    if all((lib / j).is_file() for j in CORENLP_JARS):
        return None
    corenlp_dir = corenlp_dir or os.environ.get("SPICE_CORENLP_DIR")
    if not corenlp_dir:
        return (
            "Stanford CoreNLP 3.6.0 jars not found; pass --spice-corenlp DIR or set SPICE_CORENLP_DIR to a "
            f"folder with {' and '.join(CORENLP_JARS)} (pycocoevalcap would download them: needs network)"
        )
    return install_corenlp_jars(corenlp_dir, lib)


def score_captions(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    metrics: Sequence[str] = METRICS,
    spice_corenlp_dir: str | os.PathLike | None = None,
    tokenizer: str = "auto",
) -> CaptionScores:
    """Corpus-level scores of ``predictions[id]`` against ``references[id]`` (several captions per id).

    ``metrics`` picks from ``BLEU`` (BLEU-1..4), ``METEOR``, ``ROUGE-L``, ``CIDEr-D``, ``SPICE`` (SPIDEr comes
    with CIDEr-D + SPICE). ``tokenizer``: ``auto`` (PTB if java is present), ``ptb`` or ``python``.
    """
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown caption metrics {sorted(unknown)}; choose from {METRICS}")
    ids = [i for i in predictions if i in references]
    result = CaptionScores(n=len(ids))
    if not ids:
        result.not_run = {m: "no clips to score" for m in metrics}
        return result
    java = java_path()
    use_ptb = tokenizer == "ptb" or (tokenizer == "auto" and java is not None)
    res_raw = {k: [predictions[i] or ""] for k, i in enumerate(ids)}
    gts_raw = {k: [r for r in references[i]] or [""] for k, i in enumerate(ids)}
    res, tok_name = _tokenize(res_raw, use_ptb)
    gts, _ = _tokenize(gts_raw, use_ptb and tok_name == "ptb")
    result.tokenizer = tok_name
    scores = result.scores

    if "BLEU" in metrics:
        from pycocoevalcap.bleu.bleu import Bleu

        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        scores.update({f"BLEU-{n + 1}": float(b) for n, b in enumerate(bleu)})
    if "METEOR" in metrics:
        if java is None:
            result.not_run["METEOR"] = "java not found on PATH"
        else:
            from pycocoevalcap.meteor.meteor import Meteor

            meteor = Meteor()  # one JVM for the whole call (~16 s start-up)
            try:
                scores["METEOR"] = float(meteor.compute_score(gts, res)[0])
            finally:
                del meteor
    if "ROUGE-L" in metrics:
        from pycocoevalcap.rouge.rouge import Rouge

        scores["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    if "CIDEr-D" in metrics:
        from pycocoevalcap.cider.cider import Cider

        scores["CIDEr-D"] = float(Cider().compute_score(gts, res)[0])
    if "SPICE" in metrics:
        reason = spice_unavailable_reason(spice_corenlp_dir)
        if reason is None:
            try:
                from pycocoevalcap.spice.spice import Spice

                scores["SPICE"] = float(Spice().compute_score(gts, res)[0])
            except (OSError, subprocess.SubprocessError, ValueError) as exc:
                reason = f"SPICE failed: {exc}"
        if reason is not None:
            logger.warning("SPICE not run: %s", reason)
            result.not_run["SPICE"] = reason
        if "SPICE" in scores and "CIDEr-D" in scores:
            scores["SPIDEr"] = (scores["CIDEr-D"] + scores["SPICE"]) / 2
        else:
            result.not_run["SPIDEr"] = "needs SPICE and CIDEr-D"
    return result
