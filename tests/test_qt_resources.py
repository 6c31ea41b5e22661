"""The Qt resource reader (GCompris's bundles): a bundle written here by hand, in each format version."""

from __future__ import annotations

import struct
import zlib

import pytest

from sslalm.data.corpus.qt_resources import QtResourceError, read_qt_resources


def _bundle(version: int, files: dict[str, tuple[bytes, bool]]) -> bytes:
    """A Qt resource bundle of one folder ``/snd`` holding ``files`` (name -> (bytes, zlib-compressed)),
    laid out as Qt's rcc writes it: header, data, names, tree."""
    names = b""
    name_at = {}
    for n in ["snd", *files]:
        name_at[n] = len(names)
        units = n.encode("utf-16-be")
        names += struct.pack(">HI", len(units) // 2, zlib.crc32(units)) + units
    data = b""
    data_at = {}
    for n, (raw, packed) in files.items():
        data_at[n] = len(data)
        body = struct.pack(">I", len(raw)) + zlib.compress(raw) if packed else raw
        data += struct.pack(">I", len(body)) + body
    tail = b"\0" * 8 if version >= 2 else b""  # modification time

    def directory(name_offset: int, count: int, first: int) -> bytes:
        return struct.pack(">IHII", name_offset, 2, count, first) + tail

    tree = directory(0, 1, 1) + directory(name_at["snd"], len(files), 2)
    for n, (_, packed) in files.items():
        tree += struct.pack(">IHHHI", name_at[n], 1 if packed else 0, 0, 0, data_at[n]) + tail
    header = 24 if version >= 3 else 20
    d, nm = header, header + len(data)
    tr = nm + len(names)
    head = b"qres" + struct.pack(">IIII", version, tr, d, nm) + (b"\0\0\0\0" if version >= 3 else b"")
    return head + data + names + tree


@pytest.mark.parametrize("version", [1, 2, 3])
def test_reads_plain_and_zlib_entries_of_every_version(tmp_path, version):
    files = {"dog.ogg": (b"OggS" + bytes(range(256)) * 3, False), "README": (b"GPL-3 " * 50, True)}
    path = tmp_path / "b.rcc"
    path.write_bytes(_bundle(version, files))
    assert read_qt_resources(path) == {f"/snd/{n}": raw for n, (raw, _) in files.items()}


def test_refuses_what_is_not_a_bundle_or_is_cut_short(tmp_path):
    bad = tmp_path / "x.rcc"
    bad.write_bytes(b"RIFF" + b"\0" * 40)
    with pytest.raises(QtResourceError, match="not a Qt resource bundle"):
        read_qt_resources(bad)
    whole = _bundle(2, {"a.ogg": (b"x" * 100, False)})
    bad.write_bytes(whole[:30])
    with pytest.raises(QtResourceError):
        read_qt_resources(bad)
    bad.write_bytes(b"qres" + struct.pack(">IIII", 9, 0, 0, 0))
    with pytest.raises(QtResourceError, match="version 9"):
        read_qt_resources(bad)


def test_refuses_folders_pointing_outside_and_entries_that_inflate_past_their_length(tmp_path):
    bad = tmp_path / "x.rcc"
    whole = bytearray(_bundle(2, {"a.ogg": (b"x" * 100, False)}))
    tree = struct.unpack_from(">I", whole, 8)[0]
    struct.pack_into(">I", whole, tree + 6, 2**31)  # the root folder claims 2^31 children
    bad.write_bytes(bytes(whole))
    with pytest.raises(QtResourceError, match="outside the file"):
        read_qt_resources(bad)
    bomb = _bundle(3, {"z.ogg": (b"\0" * 100_000, True)})
    at = bomb.index(struct.pack(">I", 100_000))
    bad.write_bytes(bomb[:at] + struct.pack(">I", 10) + bomb[at + 4 :])  # declares 10 bytes
    with pytest.raises(QtResourceError, match="another length"):
        read_qt_resources(bad)
