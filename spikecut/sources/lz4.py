"""LZ4 frames decoded in Numba, so that a reader can decompress and parse many packets in one call
that holds no GIL (python-lz4 takes and drops the GIL once per frame: with binning running in
the other thread, each of those hand-overs waits for it).

`lz4_frame` follows the LZ4 frame format (magic 0x184D2204, frame descriptor with its header
checksum, blocks, end mark, optional block and content checksums, all checked with XXH32) and the
LZ4 block format. Every read and write is checked against its buffer before it happens; the only
unchecked accesses are the 8- and 16-byte moves of `_copy8` / `_copy16`, which run only where a
test just before them proved the whole move inside both arrays. Dictionaries (frames that name
one) are not supported and are reported as such.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

# What `lz4_frame` reports (third value: the number the message names).
LZ4_OK, LZ4_NEED_SPACE, LZ4_MAGIC, LZ4_DESCRIPTOR, LZ4_HEADER_CHECKSUM = range(5)
LZ4_DICTIONARY, LZ4_TOO_LARGE, LZ4_TRUNCATED, LZ4_BLOCK_SIZE, LZ4_BLOCK_DATA = range(5, 10)
LZ4_BLOCK_CHECKSUM, LZ4_CONTENT_CHECKSUM, LZ4_CONTENT_SIZE = range(10, 13)
LZ4_ERRORS = {
    LZ4_MAGIC: "magic number {value:#010x} is not an LZ4 frame's",
    LZ4_DESCRIPTOR: "frame descriptor byte {value:#04x} has an unknown version or reserved bits",
    LZ4_HEADER_CHECKSUM: "frame header checksum does not match (stored {value:#04x})",
    LZ4_DICTIONARY: "the frame needs dictionary {value}, which no AEDAT4 file provides",
    LZ4_TOO_LARGE: "declares {value} bytes of content",
    LZ4_TRUNCATED: "the frame ends early, at byte {value} of the packet",
    LZ4_BLOCK_SIZE: "block of {value} bytes is larger than the frame's maximum block size",
    LZ4_BLOCK_DATA: "corrupt compressed block (at byte {value} of the packet)",
    LZ4_BLOCK_CHECKSUM: "block checksum does not match (block at byte {value} of the packet)",
    LZ4_CONTENT_CHECKSUM: "content checksum does not match (stored {value:#010x})",
    LZ4_CONTENT_SIZE: "content is {value} bytes, not the size the frame header declares",
}
#: The largest output an LZ4 frame can have per input byte (one byte per 255 match bytes).
MAX_RATIO = 256
#: Bytes of slack `lz4_frame` likes beyond the output (its 16-byte moves may overshoot).
SLACK = 32

_FRAME_MAGIC = 0x184D2204
_MASK32 = np.uint64(0xFFFFFFFF)
_P1, _P2, _P3 = np.uint64(2654435761), np.uint64(2246822519), np.uint64(3266489917)
_P4, _P5 = np.uint64(668265263), np.uint64(374761393)


def _copy_intrinsic(bits: int):
    def copy(typingctx, dst, d, src, s):
        signature = types.void(dst, d, src, s)

        def codegen(context, builder, sig, args):
            dst_value, d_value, src_value, s_value = args
            out = context.make_array(sig.args[0])(context, builder, dst_value)
            inp = context.make_array(sig.args[2])(context, builder, src_value)
            word = ir.IntType(bits).as_pointer()
            source = builder.bitcast(builder.gep(inp.data, [s_value]), word)
            target = builder.bitcast(builder.gep(out.data, [d_value]), word)
            builder.store(builder.load(source, align=1), target, align=1)
            return context.get_dummy_value()

        return signature, codegen

    return intrinsic(copy)


# dst[d:d + 8] = src[s:s + 8] (resp. 16) as one unaligned move, unchecked: the caller proves the
# bounds. Byte loops here made the decoder 4x slower than python-lz4's C.
_copy8 = _copy_intrinsic(64)
_copy16 = _copy_intrinsic(128)


@njit(cache=True, inline="always")
def _u32(buf, pos):  # pragma: no cover (compiled)
    return (
        np.uint64(buf[pos])
        | (np.uint64(buf[pos + 1]) << np.uint64(8))
        | (np.uint64(buf[pos + 2]) << np.uint64(16))
        | (np.uint64(buf[pos + 3]) << np.uint64(24))
    )


@njit(cache=True, inline="always")
def _rotl(x, r):  # pragma: no cover (compiled)
    return ((x << np.uint64(r)) | (x >> np.uint64(32 - r))) & _MASK32


@njit(cache=True, inline="always")
def _round(acc, lane):  # pragma: no cover (compiled)
    return (_rotl((acc + lane * _P2) & _MASK32, 13) * _P1) & _MASK32


@njit(cache=True, nogil=True)
def xxh32(buf, start, end, seed):  # pragma: no cover (compiled)
    """XXH32 of buf[start:end] (the checksum of LZ4 frames)."""
    seed = np.uint64(seed) & _MASK32
    p = start
    if end - start >= 16:
        v1 = (seed + _P1 + _P2) & _MASK32
        v2 = (seed + _P2) & _MASK32
        v3 = seed
        v4 = (seed - _P1) & _MASK32
        while p + 16 <= end:
            v1 = _round(v1, _u32(buf, p))
            v2 = _round(v2, _u32(buf, p + 4))
            v3 = _round(v3, _u32(buf, p + 8))
            v4 = _round(v4, _u32(buf, p + 12))
            p += 16
        h = (_rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)) & _MASK32
    else:
        h = (seed + _P5) & _MASK32
    h = (h + np.uint64(end - start)) & _MASK32
    while p + 4 <= end:
        h = (_rotl((h + _u32(buf, p) * _P3) & _MASK32, 17) * _P4) & _MASK32
        p += 4
    while p < end:
        h = (_rotl((h + np.uint64(buf[p]) * _P5) & _MASK32, 11) * _P1) & _MASK32
        p += 1
    h ^= h >> np.uint64(15)
    h = (h * _P2) & _MASK32
    h ^= h >> np.uint64(13)
    h = (h * _P3) & _MASK32
    h ^= h >> np.uint64(16)
    return h


@njit(cache=True, inline="always")
def _length(src, s, s_end, base):  # pragma: no cover (compiled)
    """An LZ4 length: base (15) plus bytes while they are 255; (length, s) or (-1, s)."""
    while True:
        if s >= s_end:
            return np.int64(-1), s
        b = np.int64(src[s])
        s += 1
        base += b
        if b != 255:
            return base, s


@njit(cache=True, inline="always")
def _copy(dst, d, src, s, n, step):  # pragma: no cover (compiled)
    """dst[d:d + n] = src[s:s + n], front to back: by moves of `step` bytes (16 or 8) where both
    arrays have room for the last one's overshoot, else (and for step 1) byte by byte."""
    if step > 1 and s + n + step <= src.shape[0] and d + n + step <= dst.shape[0]:
        k = 0
        while k < n:
            if step == 16:
                _copy16(dst, d + k, src, s + k)
            else:
                _copy8(dst, d + k, src, s + k)
            k += step
    else:
        for k in range(n):
            dst[d + k] = src[s + k]


@njit(cache=True, nogil=True)
def _block(src, s, s_end, dst, d, d_min, d_end):  # pragma: no cover (compiled)
    """Decode the LZ4 block src[s:s_end] to dst[d:]; matches may reach back to d_min. Returns
    the new output end, -1 when the block is corrupt, -2 when dst ends before d_end allows.

    Most sequences of event data are short (a few literals, a match of 5-8 bytes from 16 or more
    back): those take one 16-byte move each for literals and match, behind a single test."""
    src_size = src.shape[0]
    dst_size = dst.shape[0]
    while s < s_end:
        token = np.int64(src[s])
        s += 1
        literals = token >> 4
        length = (token & 15) + 4
        if (
            literals < 15
            and length < 19
            and s + 18 <= s_end
            and d + 32 <= d_end
            and s + 16 <= src_size
            and d + 40 <= dst_size  # literals up to d + 16, the match's moves up to d + 14 + 24
        ):
            _copy16(dst, d, src, s)
            s += literals
            d += literals
            offset = np.int64(src[s]) | (np.int64(src[s + 1]) << 8)
            if offset >= 16 and offset <= d - d_min:
                s += 2
                _copy16(dst, d, dst, d - offset)
                if length > 16:
                    _copy8(dst, d + 16, dst, d + 16 - offset)
                d += length
                continue
            # Rare: a short offset, or a bad one. The general path below takes the match.
        else:
            if literals == 15:
                literals, s = _length(src, s, s_end, literals)
                if literals < 0:
                    return -1
            if literals > s_end - s:
                return -1
            if literals > d_end - d:
                return -2
            _copy(dst, d, src, s, literals, 16)
            s += literals
            d += literals
            if s == s_end:  # the last sequence has literals only
                return d
        if s + 2 > s_end:
            return -1
        offset = np.int64(src[s]) | (np.int64(src[s + 1]) << 8)
        s += 2
        if length == 19:
            length, s = _length(src, s, s_end, np.int64(15))
            if length < 0:
                return -1
            length += 4
        if offset == 0 or offset > d - d_min:
            return -1
        if length > d_end - d:
            return -2
        # Each move reads only bytes written before it (offset >= its size); shorter offsets
        # repeat bytes still being written: one at a time.
        _copy(dst, d, dst, d - offset, length, 16 if offset >= 16 else 8 if offset >= 8 else 1)
        d += length
    return d


@njit(cache=True, nogil=True)
def lz4_frame(src, s, s_end, dst):  # pragma: no cover (compiled)
    """Decode the LZ4 frame src[s:s_end] into dst. Returns (bytes out, status, value): status
    LZ4_OK, an error (see LZ4_ERRORS, value for its message; positions relative to s), or
    LZ4_NEED_SPACE with the size dst needs at least (dst then holds nothing useful)."""
    start = s
    if s + 7 > s_end:
        return 0, LZ4_TRUNCATED, s_end - start
    magic = _u32(src, s)
    if magic != _FRAME_MAGIC:
        return 0, LZ4_MAGIC, np.int64(magic)
    flags = np.int64(src[s + 4])
    bd = np.int64(src[s + 5])
    if (flags >> 6) != 1 or flags & 2 or bd & 0x8F or (bd >> 4) < 4:
        return 0, LZ4_DESCRIPTOR, flags if (flags >> 6) != 1 or flags & 2 else bd
    block_max = np.int64(1) << (8 + 2 * (bd >> 4))
    independent = flags & 0x20
    block_checksums = flags & 0x10
    header_end = s + 6 + (8 if flags & 8 else 0) + (4 if flags & 1 else 0)
    if header_end + 1 > s_end:
        return 0, LZ4_TRUNCATED, s_end - start
    stored = np.int64(src[header_end])
    if np.int64((xxh32(src, s + 4, header_end, 0) >> np.uint64(8)) & np.uint64(0xFF)) != stored:
        return 0, LZ4_HEADER_CHECKSUM, stored
    declared = np.int64(-1)
    if flags & 8:
        declared = np.int64(_u32(src, s + 6) | (_u32(src, s + 10) << np.uint64(32)))
        if declared < 0 or declared > MAX_RATIO * (s_end - start):
            return 0, LZ4_TOO_LARGE, declared
        if declared > dst.shape[0]:
            return 0, LZ4_NEED_SPACE, declared
    if flags & 1:
        return 0, LZ4_DICTIONARY, np.int64(_u32(src, header_end - 4))
    s = header_end + 1
    d = 0
    d_end = dst.shape[0] if declared < 0 else declared
    while True:
        if s + 4 > s_end:
            return 0, LZ4_TRUNCATED, s_end - start
        word = np.int64(_u32(src, s))
        s += 4
        if word == 0:
            break
        size = word & 0x7FFFFFFF
        if size > block_max:
            return 0, LZ4_BLOCK_SIZE, size
        block_end = s + size + (4 if block_checksums else 0)
        if block_end > s_end:
            return 0, LZ4_TRUNCATED, s_end - start
        if block_checksums and xxh32(src, s, s + size, 0) != _u32(src, s + size):
            return 0, LZ4_BLOCK_CHECKSUM, s - 4 - start
        if word & 0x80000000:  # stored uncompressed
            if size > d_end - d:
                if declared >= 0:
                    return 0, LZ4_CONTENT_SIZE, d + size
                return 0, LZ4_NEED_SPACE, 2 * dst.shape[0]
            for k in range(size):
                dst[d + k] = src[s + k]
            end = d + size
        else:
            end = _block(src, s, s + size, dst, d, d if independent else 0, d_end)
            if end == -2:
                if declared >= 0:
                    return 0, LZ4_CONTENT_SIZE, d_end + 1
                return 0, LZ4_NEED_SPACE, 2 * dst.shape[0]
            if end < 0 or end - d > block_max:
                return 0, LZ4_BLOCK_DATA, s - 4 - start
        d = end
        s = block_end
    if flags & 4:
        if s + 4 > s_end:
            return 0, LZ4_TRUNCATED, s_end - start
        stored_sum = _u32(src, s)
        if xxh32(dst, 0, d, 0) != stored_sum:
            return 0, LZ4_CONTENT_CHECKSUM, np.int64(stored_sum)
    if declared >= 0 and d != declared:
        return 0, LZ4_CONTENT_SIZE, d
    return d, LZ4_OK, 0


def bigger_output(dst: np.ndarray, needed: int, frame_size: int) -> np.ndarray:
    """The output to retry `lz4_frame` with after LZ4_NEED_SPACE (it said `needed` bytes):
    twice as big at least, never beyond what a frame of `frame_size` bytes can hold. Raises
    ValueError when dst is that big already: the frame is damaged."""
    most = MAX_RATIO * frame_size + SLACK
    if dst.size >= most:
        raise ValueError(f"{frame_size} bytes decompress to more than {most} bytes")
    return np.empty(min(max(needed + SLACK, 2 * dst.size), most), dtype=np.uint8)


def decompress(frame: bytes) -> bytes:
    """One LZ4 frame's content (for tests and tools; readers call `lz4_frame` from kernels)."""
    src = np.frombuffer(frame, dtype=np.uint8)
    dst = np.empty(max(len(frame), 64), dtype=np.uint8)
    while True:
        n, status, value = lz4_frame(src, 0, src.size, dst)
        if status == LZ4_NEED_SPACE:
            dst = bigger_output(dst, int(value), src.size)
            continue
        if status != LZ4_OK:
            raise ValueError(LZ4_ERRORS[status].format(value=int(value)))
        return dst[:n].tobytes()


__all__ = ["LZ4_ERRORS", "MAX_RATIO", "bigger_output", "decompress", "lz4_frame", "xxh32"]
