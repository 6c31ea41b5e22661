"""A minimal Standard MIDI File writer (format 0, one track) for rendering instrument clips with FluidSynth.

Why our own: the corpus needs only "program change + timed notes on one channel", which is about forty
lines of the SMF format; a dependency (e.g. mido) for that is not worth it.

Format used (Standard MIDI File 1.0):
- header chunk ``MThd``: length 6, format 0, 1 track, division = ``TICKS_PER_QUARTER`` ticks per quarter note;
- track chunk ``MTrk``: events, each preceded by its delta time in ticks as a variable-length quantity
  (7 bits per byte, most significant first, high bit set on all but the last byte);
- a tempo meta event (FF 51 03, microseconds per quarter note) fixes the tick length, so times given in
  seconds convert to ticks exactly: with 500000 us per quarter and 480 ticks, one tick is 1/960 s;
- status bytes: 0xC0|ch program change, 0x90|ch note on, 0x80|ch note off; end of track is FF 2F 00.
Channel 9 (the tenth, "channel 10" in General MIDI) is the percussion channel, where the note number picks
the drum.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

TICKS_PER_QUARTER = 480
US_PER_QUARTER = 500_000  # 120 bpm: 960 ticks per second
TICKS_PER_SECOND = TICKS_PER_QUARTER * 1_000_000 // US_PER_QUARTER
DRUM_CHANNEL = 9


@dataclass(frozen=True)
class Note:
    """One note: start and duration in seconds, MIDI pitch 0-127, velocity 1-127."""

    start: float
    duration: float
    pitch: int
    velocity: int


def _vlq(value: int) -> bytes:
    """Variable-length quantity: 7-bit groups, most significant first, continuation bit on all but last."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(reversed(out))


def midi_bytes(notes: list[Note], program: int = 0, channel: int = 0) -> bytes:
    """The bytes of a format-0 MIDI file that plays ``notes`` with General MIDI ``program`` on ``channel``."""
    if not 0 <= channel <= 15 or not 0 <= program <= 127:
        raise ValueError(f"bad channel {channel} or program {program}")
    events: list[tuple[int, int, bytes]] = []  # (tick, order, bytes): note-offs sort before note-ons
    for n in notes:
        if not (0 <= n.pitch <= 127 and 1 <= n.velocity <= 127 and n.duration > 0 and n.start >= 0):
            raise ValueError(f"bad note {n}")
        on = round(n.start * TICKS_PER_SECOND)
        off = max(on + 1, round((n.start + n.duration) * TICKS_PER_SECOND))
        events.append((on, 1, bytes([0x90 | channel, n.pitch, n.velocity])))
        events.append((off, 0, bytes([0x80 | channel, n.pitch, 0])))
    events.sort(key=lambda e: (e[0], e[1], e[2]))

    track = _vlq(0) + b"\xff\x51\x03" + US_PER_QUARTER.to_bytes(3, "big")
    track += _vlq(0) + bytes([0xC0 | channel, program])
    now = 0
    for tick, _, data in events:
        track += _vlq(tick - now) + data
        now = tick
    track += _vlq(0) + b"\xff\x2f\x00"
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, TICKS_PER_QUARTER)
    return header + b"MTrk" + struct.pack(">I", len(track)) + track


def write_midi(path: str | Path, notes: list[Note], program: int = 0, channel: int = 0) -> None:
    Path(path).write_bytes(midi_bytes(notes, program, channel))
