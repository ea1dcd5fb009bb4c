"""Our Numba LZ4 frame decoder (spikecut.sources.lz4) against python-lz4, the reference: every
frame layout python-lz4 writes decodes to the same bytes, and damaged frames give our ValueError
(or, where the damage still makes a valid frame, python-lz4's bytes), never a crash. The
bounds-checked rerun (test_fuzz_boundscheck) runs this file too."""

from __future__ import annotations

import itertools

import lz4.frame
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikecut.sources.lz4 import decompress, xxh32

RNG = np.random.default_rng(7)
CONTENTS = {
    "empty": b"",
    "one byte": b"a",
    "zeros": bytes(100_000),
    "random": RNG.integers(0, 256, 70_000, dtype=np.uint8).tobytes(),
    "periodic": b"abcdefgh" * 40_000,
    "few symbols": RNG.integers(0, 4, 300_000, dtype=np.uint8).tobytes(),
    # DV event structs: a short repeating layout with slowly changing fields.
    "events": np.rec.fromarrays(
        [np.cumsum(RNG.integers(0, 40, 20_000)), RNG.integers(0, 346, 20_000),
         RNG.integers(0, 260, 20_000), RNG.integers(0, 2, 20_000), np.zeros(20_000, "V3")],
        dtype=[("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("on", "u1"), ("_", "V3")],
    ).tobytes(),
}  # fmt: skip
LAYOUTS = [
    dict(block_size=size, block_linked=linked, content_checksum=content, block_checksum=block,
         store_size=store)
    for size, linked, content, block, store in itertools.product(
        [lz4.frame.BLOCKSIZE_MAX64KB, lz4.frame.BLOCKSIZE_MAX256KB, lz4.frame.BLOCKSIZE_MAX4MB],
        [True, False], [True, False], [True, False], [True, False],
    )
]  # fmt: skip


@pytest.mark.parametrize("content", CONTENTS.values(), ids=CONTENTS.keys())
@pytest.mark.parametrize("level", [0, 9])
def test_every_frame_layout_decodes_like_python_lz4(content, level):
    for layout in LAYOUTS:
        frame = lz4.frame.compress(content, compression_level=level, **layout)
        assert decompress(frame) == content, layout


def test_xxh32_known_values():
    """Published XXH32 values (seed 0 unless given)."""
    cases = [
        (b"", 0, 0x02CC5D05),
        (b"a", 0, 0x550D7456),
        (b"abc", 0, 0x32D153FF),
        (b"Nobody inspects the spammish repetition", 0, 0xE2293B2F),
        (b"", 1, 0x0B2CB792),
    ]
    for data, seed, expected in cases:
        buffer = np.frombuffer(data, dtype=np.uint8)
        assert xxh32(buffer, 0, buffer.size, seed) == expected, data


FRAME = lz4.frame.compress(CONTENTS["events"][:40_000], block_size=lz4.frame.BLOCKSIZE_MAX64KB)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, len(FRAME) - 1), st.binary(min_size=1, max_size=8), st.booleans())
def test_damaged_frames_are_refused_or_decode_as_python_lz4_does(position, patch, cut):
    damaged = bytearray(FRAME)
    damaged[position : position + len(patch)] = patch
    if cut:
        del damaged[position + len(patch) :]
    damaged = bytes(damaged)
    try:
        ours = decompress(damaged)
    except ValueError:
        return
    assert ours == lz4.frame.decompress(damaged)


@pytest.mark.parametrize(
    "frame, message",
    [
        (b"\x04\x22\x4d", "ends early"),
        (b"\0\0\0\0\x40\x40\xc0", "magic number 0x00000000"),
        (FRAME[:4] + b"\x80" + FRAME[5:], "unknown version"),
        (FRAME[:6] + bytes([FRAME[6] ^ 1]) + FRAME[7:], "header checksum"),
        (FRAME[:-4], "ends early"),
    ],
)
def test_messages_name_what_is_wrong(frame, message):
    with pytest.raises(ValueError, match=message):
        decompress(frame)
