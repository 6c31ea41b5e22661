"""One way to open a saved model folder, shared by ``sslalm ask``, ``eval``, ``serve`` and ``app``.

A model folder is what ``SSLALM.save_pretrained`` (and every ``sslalm train`` stage) writes: it holds
``config.json`` and ``model.safetensors``. Pointing a command at any other folder (a run folder holding
several stages, say) raises ``ModelFolderError`` with one line that names the model folders found below it,
newest first, so the user can copy the right path.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from sslalm.errors import UserError

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_SEARCH_DEPTH = 4
_SHOWN = 5


class ModelFolderError(UserError):
    """The path given is not a loadable model folder; the message says what is there instead."""


def is_model_folder(path: str | os.PathLike) -> bool:
    """True if ``path`` holds both files a saved SSLALM has."""
    p = Path(path)
    return (p / CONFIG_FILE).is_file() and (p / WEIGHTS_FILE).is_file()


def find_model_folders(root: str | os.PathLike, max_depth: int = _SEARCH_DEPTH) -> list[Path]:
    """Model folders at most ``max_depth`` levels below ``root``, newest weights first."""
    root = Path(root)
    found: list[Path] = []
    if not root.is_dir():
        return found
    base_depth = len(root.parts)
    for dirpath, dirnames, _ in os.walk(root):
        here = Path(dirpath)
        if len(here.parts) - base_depth >= max_depth:
            dirnames[:] = []
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if here != root and is_model_folder(here):
            found.append(here)
            dirnames[:] = [d for d in dirnames if d.startswith("checkpoint-")]
    return sorted(found, key=lambda p: (p / WEIGHTS_FILE).stat().st_mtime, reverse=True)


def check_model_folder(path: str | os.PathLike) -> Path:
    """``path`` as a Path if it is a model folder, else ``ModelFolderError`` naming what to use instead."""
    p = Path(path)
    if is_model_folder(p):
        return p
    if not p.exists():
        raise ModelFolderError(f"model folder {p} does not exist")
    if not p.is_dir():
        raise ModelFolderError(f"{p} is a file, not a model folder (a folder with {CONFIG_FILE})")
    below = find_model_folders(p)
    if below:
        names = ", ".join(str(f) for f in below[:_SHOWN]) + (" ..." if len(below) > _SHOWN else "")
        raise ModelFolderError(f"{p} is not a model folder; model folders below it (newest first): {names}")
    missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE) if not (p / f).is_file()]
    raise ModelFolderError(
        f"{p} is not a model folder: it has no {' or '.join(missing)} and no model folder below it "
        "(write one with SSLALM.save_pretrained or sslalm train)"
    )


def load_model(path: str | os.PathLike, device: str | None = None) -> Any:
    """``SSLALM.from_pretrained(path)`` on ``device`` (default: CUDA if available), in eval mode."""
    import torch

    from sslalm.models.lalm import SSLALM

    folder = check_model_folder(path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = SSLALM.from_pretrained(folder).to(device).eval()
    logger.info("loaded %s (%s) on %s", folder, model.config.name, device)
    return model
