"""Read the files inside a Qt resource bundle (``.rcc``), the format GCompris ships its sounds in.

Why our own reader: Debian's ``gcompris-qt-data`` keeps its recordings (farm animals and more) inside
compiled Qt resource files, not as loose files. Qt's own reader needs PySide6 or PyQt (hundreds of MB) just
to list a directory tree; the format itself is small and stable (Qt's ``rcc`` documents it in
``qresource.cpp``): a header, a flat table of tree nodes, a table of UTF-16 names and a data area.

Layout (all integers big-endian):

- header: ``b"qres"``, format version (1-3), then the offsets of the tree, the data and the names;
  version 3 adds a flags word.
- tree: nodes of 14 bytes (version 1) or 22 bytes (2-3, with a modification time): name offset (u32),
  flags (u16: 1 zlib, 2 directory, 4 zstd), then for a directory its child count and first child index
  (u32 each), for a file its country and language (u16 each) and its data offset (u32).
- names: u16 length, u32 hash, then that many UTF-16 code units.
- data: u32 size, then the bytes; a zlib entry starts with the u32 length of its uncompressed form.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

MAGIC = b"qres"
_DIRECTORY, _ZLIB, _ZSTD = 2, 1, 4
MAX_FILE_BYTES = 256 * 2**20  # a decompressed entry larger than this is refused (GCompris's are < 1 MB)


class QtResourceError(ValueError):
    """The file is not a Qt resource bundle this reader understands."""


def read_qt_resources(path: str | Path) -> dict[str, bytes]:
    """Every file of the bundle at ``path``: resource path (``"/a/b.ogg"``) -> its (decompressed) bytes.

    Raises ``QtResourceError`` for anything that is not a whole bundle of a known version.
    """
    blob = Path(path).read_bytes()
    try:
        return _parse(blob, str(path))
    except (struct.error, UnicodeDecodeError, zlib.error) as exc:
        raise QtResourceError(f"{path}: damaged Qt resource bundle ({exc})") from exc


def _parse(blob: bytes, path: str) -> dict[str, bytes]:
    if len(blob) < 20 or blob[:4] != MAGIC:
        raise QtResourceError(f"{path} is not a Qt resource bundle (no {MAGIC!r} header)")
    version, tree, data, names = struct.unpack_from(">IIII", blob, 4)
    if version not in (1, 2, 3):
        raise QtResourceError(f"{path}: Qt resource format version {version} is not supported (1-3)")
    node_size = 14 if version == 1 else 22

    def name(offset: int) -> str:
        (length,) = struct.unpack_from(">H", blob, names + offset)
        start = names + offset + 6
        return blob[start : start + 2 * length].decode("utf-16-be")

    files: dict[str, bytes] = {}
    stack = [(0, "")]  # (node index, parent path)
    seen = set()
    while stack:
        index, parent = stack.pop()
        if index in seen:
            raise QtResourceError(f"{path}: the resource tree has a cycle")
        seen.add(index)
        at = tree + index * node_size
        if at + 14 > len(blob):
            raise QtResourceError(f"{path}: tree node {index} lies outside the file")
        name_offset, flags = struct.unpack_from(">IH", blob, at)
        here = f"{parent}/{name(name_offset)}" if index else ""
        if flags & _DIRECTORY:
            count, first = struct.unpack_from(">II", blob, at + 6)
            if tree + (first + count) * node_size > len(blob):
                raise QtResourceError(f"{path}: folder {here or '/'} lists nodes outside the file")
            stack += [(child, here) for child in range(first, first + count)]
            continue
        (data_offset,) = struct.unpack_from(">I", blob, at + 10)
        (size,) = struct.unpack_from(">I", blob, data + data_offset)
        payload = blob[data + data_offset + 4 : data + data_offset + 4 + size]
        if len(payload) != size:
            raise QtResourceError(f"{path}: {here} is cut short")
        if flags & _ZSTD:
            raise QtResourceError(f"{path}: {here} is zstd-compressed, which this reader does not decode")
        files[here] = _inflate(payload, f"{path}: {here}") if flags & _ZLIB else payload
    return files


def _inflate(payload: bytes, where: str) -> bytes:
    """A zlib entry: its declared length (u32), then the stream; never inflates past that length."""
    (declared,) = struct.unpack_from(">I", payload)
    if declared > MAX_FILE_BYTES:
        raise QtResourceError(f"{where} declares {declared} bytes, over the {MAX_FILE_BYTES} allowed")
    inflater = zlib.decompressobj()
    out = inflater.decompress(payload[4:], declared + 1)
    if len(out) != declared or not inflater.eof:
        raise QtResourceError(f"{where}: inflates to another length than the {declared} bytes it declares")
    return out
