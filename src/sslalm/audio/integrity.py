"""Container walkers that tell whether an audio file is complete (libsndfile decodes some damaged files
without an error, losing audio silently).

* ``wav_data_shortfall``: a WAVE (RIFF/RIFX) or AIFF file whose sample chunk is cut short still opens;
  compare the declared chunk size with the bytes that are there.
* ``ogg_stream_complete``: an Ogg file cut anywhere decodes up to the cut; its last complete page must carry
  the end-of-stream flag.
* ``scan_mpeg``: count the MPEG audio frames of an MP3 (and read its Xing/Info frame count), because for a
  VBR MP3 without a Xing/Info header libsndfile's sample count is an estimate from the file size.

These only parse bytes; :mod:`sslalm.audio.decode` decides what to raise.
"""

from __future__ import annotations

import io
import struct
from typing import BinaryIO

_WAV_UNKNOWN_SIZE = 0x7FFF0000  # data sizes at or above this are "length unknown" placeholders (streamed WAV)


def wav_data_shortfall(fh: BinaryIO) -> tuple[int, int] | None:
    """(declared, present) byte counts when the sample chunk of a WAVE or AIFF file is cut short, else None.

    Walks the RIFF (little-endian ``data``), RIFX or IFF ``FORM``/AIFF (big-endian ``SSND``) chunks.
    """
    size = fh.seek(0, io.SEEK_END)
    fh.seek(0)
    head = fh.read(12)
    if len(head) == 12 and head[:4] in (b"RIFF", b"RIFX") and head[8:12] == b"WAVE":
        endian, data_id = ("<" if head[:4] == b"RIFF" else ">"), b"data"
    elif len(head) == 12 and head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        endian, data_id = ">", b"SSND"
    else:
        return None
    pos = 12
    while pos + 8 <= size:
        fh.seek(pos)
        chunk_id, chunk_size = struct.unpack(endian + "4sI", fh.read(8))
        if chunk_id == data_id:
            present = size - pos - 8
            if present < chunk_size < _WAV_UNKNOWN_SIZE:
                return chunk_size, present
            return None
        pos += 8 + chunk_size + (chunk_size & 1)
    return None


def ogg_stream_complete(fh: BinaryIO) -> bool:
    """True when the last complete Ogg page carries the end-of-stream flag (bytes after it are ignored)."""
    size = fh.seek(0, io.SEEK_END)
    pos, last_flags = 0, 0
    while pos + 27 <= size:
        fh.seek(pos)
        header = fh.read(27)  # "OggS", version, flags, granule, serial, sequence, crc, segment count
        if header[:4] != b"OggS":
            break
        table = fh.read(header[26])
        end = pos + 27 + len(table) + sum(table)
        if len(table) < header[26] or end > size:
            break
        last_flags, pos = header[5], end
    return bool(last_flags & 0x04)


# ------------------------------------------------------------------------------------------------------- MP3

# kbit/s by bitrate index 1..14, for (MPEG-1, layer) and (MPEG-2/2.5, layer); layer 2 and 3 share in MPEG-2.
_MPEG1_KBPS = {
    1: (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    2: (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    3: (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
}
_MPEG2_KBPS = {
    1: (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    2: (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    3: (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}  # by version


def _mpeg_frame(data: bytes, pos: int) -> tuple[int, int] | None:
    """(frame length in bytes, samples per frame) of an MPEG audio frame header at ``pos``, or None."""
    if pos + 4 > len(data) or data[pos] != 0xFF or data[pos + 1] & 0xE0 != 0xE0:
        return None
    b1, b2 = data[pos + 1], data[pos + 2]
    version, layer_bits, bitrate_idx, rate_idx = (b1 >> 3) & 3, (b1 >> 1) & 3, b2 >> 4, (b2 >> 2) & 3
    if version == 1 or layer_bits == 0 or bitrate_idx in (0, 15) or rate_idx == 3:
        return None
    layer = 4 - layer_bits
    kbps = (_MPEG1_KBPS if version == 3 else _MPEG2_KBPS)[layer][bitrate_idx - 1]
    rate, padding = _MPEG_RATES[version][rate_idx], (b2 >> 1) & 1
    if layer == 1:
        return (12 * kbps * 1000 // rate + padding) * 4, 384
    per_frame = 1152 if layer == 2 or version == 3 else 576
    return per_frame // 8 * kbps * 1000 // rate + padding, per_frame


def scan_mpeg(data: bytes) -> tuple[int, int, int | None]:
    """Walk the MPEG frames of an MP3 file. Returns (audio frames, samples per frame, Xing/Info frame count).

    The Xing/Info frame (if any) is not counted as audio. A last frame cut short is not counted.
    """
    pos = 0
    if data[:3] == b"ID3" and len(data) >= 10:  # ID3v2 tag: syncsafe size, optional footer
        pos = 10 + ((data[6] & 0x7F) << 21 | (data[7] & 0x7F) << 14 | (data[8] & 0x7F) << 7 | data[9] & 0x7F)
        pos += 10 if data[5] & 0x10 else 0
    frames, per_frame, xing, first = 0, 1152, None, True
    while pos < len(data):
        frame = _mpeg_frame(data, pos)
        if frame is None:  # resync on the next header that is followed by another header
            nxt = data.find(b"\xff", pos + 1)
            while nxt != -1:
                f = _mpeg_frame(data, nxt)
                if f is not None and (nxt + f[0] >= len(data) or _mpeg_frame(data, nxt + f[0]) is not None):
                    break
                nxt = data.find(b"\xff", nxt + 1)
            if nxt == -1:
                break
            pos = nxt
            continue
        length, per_frame = frame
        if pos + length > len(data):
            break
        if first:
            first = False
            body = data[pos : pos + length]
            tag = max(body.find(b"Xing", 4, 48), body.find(b"Info", 4, 48))
            if tag != -1 and len(body) >= tag + 12 and body[tag + 7] & 1:
                xing = struct.unpack(">I", body[tag + 8 : tag + 12])[0]
                pos += length
                continue
        frames += 1
        pos += length
    return frames, per_frame, xing
