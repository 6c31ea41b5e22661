"""One way to open a saved model folder, shared by ``sslalm ask``, ``eval``, ``serve`` and ``app``.

A model folder is what ``SSLALM.save_pretrained`` (and every ``sslalm train`` stage) writes: it holds
``config.json`` and ``model.safetensors``. Pointing a command at any other folder (a run folder holding
several stages, say) raises ``ModelFolderError`` with one line that names the model folders found below it,
newest first, so the user can copy the right path.
"""

from __future__ import annotations

import logging
import os
from typing import Any

# the folder checks live beside the rest of the folder code; re-exported here, where callers look for them
from sslalm.models.folder import (  # noqa: F401
    CONFIG_FILE,
    WEIGHTS_FILE,
    ModelFolderError,
    check_model_folder,
    find_model_folders,
    is_model_folder,
)

logger = logging.getLogger(__name__)


def load_model(path: str | os.PathLike, device: str | None = None) -> Any:
    """``SSLALM.from_pretrained(path)`` on ``device`` (default: CUDA if available), in eval mode."""
    import torch

    from sslalm.models.lalm import SSLALM

    folder = check_model_folder(path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = SSLALM.from_pretrained(folder).to(device).eval()
    logger.info("loaded %s (%s) on %s", folder, model.config.name, device)
    return model
