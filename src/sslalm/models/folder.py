"""A saved model folder's files: paths resolved inside the folder, files read with errors that name them.

A model folder (``SSLALM.save_pretrained``) must load from itself alone, wherever it is moved or copied:

* a relative path in its ``config.json`` (``base_lm``, ``tokenizer``) means a path inside the folder, never
  one relative to the working directory; a part that is missing raises ``ModelFolderError`` naming it;
* a pointer to a base LM outside the folder (a pretrained checkpoint) is stored absolute; one inside the
  folder is stored relative, so the folder stays portable;
* reading ``config.json``, JSON files of the tokenizer or base LM, and the weights translates library errors
  (JSONDecodeError, SafetensorError, PermissionError) into one-line ``UserError`` messages naming the file;
  weights holding NaN or infinity are refused, naming the tensor;
* the files written get the permissions of every other file the process writes (``0666 & ~umask``);
  safetensors itself creates its file with mode 0600, which locks other users (a service account) out.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
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


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """The parsed JSON of ``path``; a missing, unreadable or invalid file raises a ``UserError`` naming it
    (and, for invalid JSON, the line and column)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{what} {path} is missing") from None
    except PermissionError:
        raise UserError(f"cannot read {path}: permission denied (check the file's owner and mode)") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder; expected a JSON file") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not a text (UTF-8) file: {err.reason} at byte {err.start}") from None
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(
            f"{path} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}; "
            "fix or restore the file"
        ) from None


def read_config_dict(folder: str | os.PathLike) -> dict[str, Any]:
    """``folder/config.json`` as a dict (a JSON object), with errors naming the file."""
    path = Path(folder) / "config.json"
    data = read_json(path, "model config")
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a JSON object (the model's config), got {type(data).__name__}")
    return data


_PARTS = {
    "lm_checkpoint": "base language model (lm_checkpoint)",
    "encoder_checkpoint": "encoder checkpoint",
    "tag_checkpoint": "tag head (tag_checkpoint)",
}


def resolve_part(value: str | None, folder: Path | None, field: str) -> str | None:
    """The path a config's ``field`` (``lm_checkpoint``, ``tokenizer``, ...) names.

    Inside a model folder (``folder`` given) a relative path is resolved against the folder only, and the
    part must exist: a missing one raises ``ModelFolderError`` naming it. Without a folder (a config built in
    Python) the value is returned as it is, for the loader to read.
    """
    if value is None:
        return None
    if folder is None:
        return str(value)
    p = Path(value)
    full = p if p.is_absolute() else Path(folder) / p
    if not p.is_absolute() and ".." in p.parts:
        raise ModelFolderError(
            f"model folder {folder}: its {field} {str(p)!r} leaves the folder; a relative path in a model "
            "folder must stay inside it (use an absolute path for a part stored elsewhere)"
        )
    if not full.exists():
        where = "inside the model folder" if not p.is_absolute() else "outside the model folder"
        what = _PARTS.get(field, field)
        raise ModelFolderError(
            f"model folder {folder} is incomplete: its {what} {str(p)!r} ({where}) does not exist at "
            f"{full}; copy the whole folder again, or point config.json's {field} at the right path"
        )
    return str(full)


def is_inside(target: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """True if ``target`` is ``folder`` or below it (symbolic links resolved)."""
    target_abs, folder_abs = Path(target).resolve(), Path(folder).resolve()
    return target_abs == folder_abs or folder_abs in target_abs.parents


def pointer(target: str | os.PathLike, folder: str | os.PathLike) -> str:
    """How a model folder ``folder`` records the path ``target``: relative inside it, else absolute."""
    target_abs = Path(target).resolve()
    if is_inside(target_abs, folder):
        return target_abs.relative_to(Path(folder).resolve()).as_posix()
    return str(target_abs)


COPY_LIMIT = 1 << 30  # bytes: a base LM that cannot be hard-linked is copied into the folder up to this size


def can_bring_along(source: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """True if the checkpoint folder ``source`` can be placed inside the model folder ``folder`` cheaply:
    on the same filesystem (hard links, no extra disk), or a copy of at most ``COPY_LIMIT`` bytes. A large
    checkpoint on another filesystem stays where it is and is pointed at by absolute path."""
    source, folder = Path(source), Path(folder)
    if not source.is_dir():
        return False
    if os.stat(source).st_dev == os.stat(folder).st_dev:
        return True
    return sum(f.stat().st_size for f in source.rglob("*") if f.is_file()) <= COPY_LIMIT


def copy_tree_linked(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy folder ``src`` to ``dst`` with hard links where the filesystem allows (no extra disk), else
    plain copies. The files are never modified in place, so sharing them is safe."""

    def link_or_copy(s: str, d: str) -> str:
        try:
            os.link(s, d)
            return d
        except OSError:
            return shutil.copy2(s, d)

    shutil.copytree(src, dst, copy_function=link_or_copy)


def same_tree(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True if folder ``b`` exists and holds the same files as ``a``, hard-linked or with equal contents."""
    import filecmp

    a, b = Path(a), Path(b)
    if not b.is_dir():
        return False
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    if files_a != files_b:
        return False
    return all(os.path.samefile(a / f, b / f) or filecmp.cmp(a / f, b / f, shallow=False) for f in files_a)


def current_umask() -> int:
    """The process's umask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike) -> None:
    """Give ``path`` (a file, or every file and folder below a folder) the default permissions of new files
    (``0666 & ~umask``; folders ``0777 & ~umask``)."""
    mask = current_umask()
    p = Path(path)
    items = [p] if p.is_file() else [p, *p.rglob("*")]
    for item in items:
        if item.is_symlink():
            continue
        mode = (0o777 if item.is_dir() else 0o666) & ~mask
        try:
            os.chmod(item, mode)
        except PermissionError:  # a hard-linked file owned by another user: leave it as it is
            logger.debug("cannot chmod %s", item)


def load_weights(path: str | os.PathLike) -> dict[str, Any]:
    """The tensors of a safetensors file, refusing a missing, unreadable, corrupt or non-finite one."""
    from sslalm.models.mamba_config import _load_safetensors, check_finite

    path = Path(path)
    if not path.is_file():
        raise ModelFolderError(f"model weights {path} are missing; save the model again")
    state = _load_safetensors(path, "cpu")
    check_finite(state, path)
    return state


def check_json_files(folder: str | os.PathLike, what: str) -> None:
    """Parse every ``*.json`` file directly in ``folder`` so that an invalid one is named with its line
    (the tokenizer and transformers loaders would report a bare parse error)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"{what} {folder} is not a folder")
    if not os.access(folder, os.R_OK | os.X_OK):
        raise UserError(f"cannot read {what} {folder}: permission denied")
    for file in sorted(folder.glob("*.json")):
        read_json(file, what + " file")
