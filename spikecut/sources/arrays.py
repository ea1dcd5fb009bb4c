"""Array containers: `.npy`, `.npz` and HDF5 (`events/{t,x,y,p}`): readers and writers.

All three are read in row blocks (bounded memory), never loaded whole. Rows already in
`EVENT_DTYPE` (what our writers store) are read straight into the output chunks, with no
conversion: the validator's one pass over them is the only work besides the read. Other layouts
(tonic's x, y, t, p as int64, other widths and names) are converted column by column.

- `.npy`: a 1-D structured array with fields t, x, y and p (aliases: `ts`/`timestamp` for t,
  `on`/`polarity` for p), any integer widths. It carries no sensor size: 1 + the largest
  coordinate, unless `sensor_size=` is given. Object arrays (pickles) are refused.
- `.npz`: either an `events` member holding such a structured array, or one member per column
  (`t`, `x`, `y`, `p`); optional scalar members `width` and `height` (or `sensor_size`, tonic's
  (width, height, polarities)), `time_origin`. Our writer stores `events` plus those scalars.
- HDF5 (needs the `hdf5` extra, h5py): datasets `events/t`, `events/x`, `events/y`, `events/p`
  (or `events/on`/`events/polarity`); attributes `width`/`height` or `sensor_size` on the file
  or on the `events` group. Our writer adds `time_origin` and `source` attributes.
"""

from __future__ import annotations

import ast
import os
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from spikecut.errors import (
    CorruptFileError,
    EventDataError,
    SourceUnavailableError,
    SpikecutError,
    TruncatedFileError,
)
from spikecut.sources.events import EVENT_DTYPE, TIME_ORIGINS, make_events
from spikecut.sources.reader import EventReader
from spikecut.sources.writer import EventWriter

_ALIASES = {"t": ("t", "ts", "timestamp"), "x": ("x",), "y": ("y",), "p": ("p", "on", "polarity")}
_NPY_MAGIC = b"\x93NUMPY"
#: Rows that read_all reads straight into its array per call (3.4 MB of EVENT_DTYPE): few
#: enough calls for their Python cost to vanish, small enough to be validated from cache.
_READ_ALL_BLOCK_ROWS = 1 << 18


def _field_names(names: tuple[str, ...]) -> dict[str, str] | None:
    """Map t/x/y/p to the names present, or None when one is missing."""
    found = {}
    for field, aliases in _ALIASES.items():
        match = next((a for a in aliases if a in names), None)
        if match is None:
            return None
        found[field] = match
    return found


def _npy_header(file: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of the .npy stream positioned at its magic; ValueError if
    the header is damaged."""
    try:
        return _parse_npy_header(file)
    except ValueError:
        raise
    except Exception as exc:  # the header is a Python literal: any parse failure is damage
        raise ValueError(f"unreadable .npy header: {exc}") from exc


def _parse_npy_header(file: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(file)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(file)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(file)
    if version == (3, 0):
        # 3.0 is 2.0 with a UTF-8 header.
        (length,) = struct.unpack("<I", file.read(4))
        header = ast.literal_eval(file.read(length).decode("utf-8"))
        return header["shape"], header["fortran_order"], np.dtype(header["descr"])
    raise ValueError(f"npy format version {version} is not supported")


def _declared_size(values: Mapping[str, Any]) -> tuple[int, int] | None:
    """(width, height) from `width` and `height` values, else from tonic's `sensor_size`."""
    if "width" in values and "height" in values:
        return int(values["width"]), int(values["height"])
    if "sensor_size" in values and np.size(values["sensor_size"]) >= 2:
        size = np.ravel(values["sensor_size"])
        return int(size[0]), int(size[1])
    return None


def _convert(columns: dict[str, np.ndarray], source: str, first: int) -> np.ndarray:
    """Columns (any integer types) -> EVENT_DTYPE, naming the file and row on bad values."""
    for name, col in columns.items():
        if col.dtype.kind not in "iub":
            raise EventDataError(
                f"{source}: column {name!r} holds {col.dtype}, not integers (rows from {first})"
            )
    try:
        return make_events(columns["t"], columns["x"], columns["y"], columns["p"])
    except EventDataError as exc:
        raise EventDataError(f"{source}: in the block of rows from index {first}: {exc}") from None


class _RowStream:
    """Rows of one .npy stream (a file or a zip member), read a block at a time."""

    def __init__(
        self, file: IO[bytes], what: str, known: tuple[int, np.dtype] | None = None
    ) -> None:
        """Parse the header at the stream's position, or take `known` (count, dtype) when the
        stream is already positioned at the data."""
        self.file = file
        self.what = what
        self.read_rows = 0
        if known is not None:
            self.count, self.dtype = known
            return
        shape, _, dtype = _npy_header(file)
        if dtype.hasobject:
            raise ValueError(f"{what} holds Python objects (pickles are refused)")
        if len(shape) != 1:
            raise ValueError(f"{what} has shape {shape}; expected a 1-D array")
        self.count = int(shape[0])
        self.dtype = dtype

    def read(self, rows: int) -> np.ndarray:
        want = min(rows, self.count - self.read_rows)
        data = self.file.read(want * self.dtype.itemsize)
        got = len(data) // self.dtype.itemsize
        self.read_rows += got
        array = np.frombuffer(data, dtype=self.dtype, count=got)
        if got < want:
            raise _ShortRead(array, self.read_rows, self.count)
        return array

    def read_into(self, out: np.ndarray) -> np.ndarray:
        """The next rows, as many as fit in `out` (of this stream's dtype), read straight into
        it: no intermediate buffer, no conversion."""
        want = min(out.size, self.count - self.read_rows)
        size = self.dtype.itemsize
        target = out[:want].view(np.uint8)
        done = 0
        while done < target.size:  # a zip member's readinto may stop short of what is asked
            got = self.file.readinto(target[done:])
            if not got:
                break
            done += got
        rows = done // size
        self.read_rows += rows
        if rows < want:
            raise _ShortRead(out[:rows], self.read_rows, self.count)
        return out[:rows]


class _ShortRead(Exception):
    def __init__(self, rows: np.ndarray, read: int, expected: int) -> None:
        super().__init__(f"{read} of {expected} rows present")
        self.rows = rows


class _ArrayReader(EventReader):
    """Shared block loops: structured rows (`_structured`) and columns (`_iter_columns`).

    Rows already in EVENT_DTYPE (what our writers store) are read straight into the output
    chunk and checked by the validator in the same pass that everything else gets; only other
    layouts are converted column by column.
    """

    time_origin = "sensor"
    _stored_origin: str | None = None
    _count: int | None = None

    def _time_origin(self) -> str:
        return self._stored_origin if self._stored_origin in TIME_ORIGINS else self.time_origin

    def _capacity_hint(self) -> int:
        return max(self._count, 1) if self._count is not None else super()._capacity_hint()

    def _iter_columns(self) -> Iterator[dict[str, np.ndarray]]:
        raise NotImplementedError

    def _decode(self) -> Iterator[np.ndarray]:
        first = 0
        for columns in self._iter_columns():
            events = _convert(columns, str(self.path), first)
            first += events.size
            if events.size:
                yield events

    def _structured(
        self,
        stream: _RowStream,
        names: dict[str, str],
        truncated: Callable[[_ShortRead, _RowStream], Exception],
    ) -> Iterator[np.ndarray]:
        """EVENT_DTYPE chunks of a stream of structured rows, then `truncated(...)` raised if
        the stream ends early (after the whole rows before the cut)."""
        native = stream.dtype == EVENT_DTYPE
        # read_all offers its whole array: fill it a block at a time all the same, so that the
        # validator finds each block still in cache.
        block_rows = max(self.chunk_events, _READ_ALL_BLOCK_ROWS)
        while stream.read_rows < stream.count:
            first = stream.read_rows
            try:
                if native:
                    rows = stream.read_into(self._new_chunk()[:block_rows])
                else:
                    rows = stream.read(self.chunk_events)
            except _ShortRead as short:
                rows = short.rows
                if rows.size:
                    yield rows if native else self._convert_rows(rows, names, first)
                raise truncated(short, stream) from None
            yield rows if native else self._convert_rows(rows, names, first)

    def _convert_rows(self, rows: np.ndarray, names: dict[str, str], first: int) -> np.ndarray:
        return _convert({k: rows[v] for k, v in names.items()}, str(self.path), first)


class NpyReader(_ArrayReader):
    format = "npy"

    def _open(self) -> tuple[int, int] | None:
        try:
            stream = _RowStream(self._file, "the array")
        except (ValueError, SyntaxError, struct.error, KeyError) as exc:
            raise self._error(
                CorruptFileError, f"not a readable .npy file: {exc}", offset=0
            ) from exc
        self._check_fields(stream.dtype)
        self._data_offset = self._file.tell()
        self._count = stream.count
        self._dtype = stream.dtype
        return None

    def _check_fields(self, dtype: np.dtype) -> None:
        if dtype.names is None or _field_names(dtype.names) is None:
            raise self._error(
                CorruptFileError,
                f"the array has fields {dtype.names or 'none'}; a structured array with fields "
                "t, x, y and p (or on/polarity) is needed",
            )
        self._names = _field_names(dtype.names)

    def _decode(self) -> Iterator[np.ndarray]:
        self._file.seek(self._data_offset)
        stream = _RowStream(self._file, "the array", known=(self._count, self._dtype))
        yield from self._structured(stream, self._names, self._truncated)

    def _truncated(self, short: _ShortRead, stream: _RowStream) -> Exception:
        return self._error(
            TruncatedFileError,
            f"file ends inside the array data ({short})",
            offset=self._data_offset + stream.read_rows * stream.dtype.itemsize,
            index=stream.read_rows,
        )


class NpzReader(_ArrayReader):
    format = "npz"

    def _open(self) -> tuple[int, int] | None:
        try:
            self._zip = zipfile.ZipFile(self._file)
            members = {name[:-4]: name for name in self._zip.namelist() if name.endswith(".npy")}
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise self._error(CorruptFileError, f"not a readable .npz archive: {exc}") from exc
        self._members = members
        try:
            names = ("width", "height", "time_origin")
            scalars = {k: self._scalar(k) for k in names if k in members}
            if "sensor_size" in members:
                scalars["sensor_size"] = self._small("sensor_size")
            if "events" in members:
                with self._member("events") as stream:
                    dtype = stream.dtype
                    self._count = stream.count
                names = _field_names(dtype.names or ())
                if names is None:
                    raise ValueError(
                        f"member 'events' has fields {dtype.names or 'none'}; fields t, x, y "
                        "and p (or on/polarity) are needed"
                    )
                self._names = names
                self._columns = None
            else:
                columns = _field_names(tuple(members))
                if columns is None:
                    raise ValueError(
                        f"members {sorted(members)}: an 'events' member or members t, x, y, p "
                        "are needed"
                    )
                self._columns = columns
        except (
            ValueError,
            SyntaxError,
            KeyError,
            struct.error,
            zipfile.BadZipFile,
            zlib.error,
            EOFError,
            OSError,
        ) as exc:
            raise self._error(CorruptFileError, str(exc)) from exc
        self._stored_origin = str(scalars.get("time_origin")) if "time_origin" in scalars else None
        return _declared_size(scalars)

    def _member(self, name: str) -> _MemberStream:
        return _MemberStream(self._zip.open(self._members[name]), f"member {name!r}")

    def _small(self, name: str) -> np.ndarray:
        with self._member(name) as stream:
            if stream.count > 16:
                raise ValueError(f"member {name!r} should be small, has {stream.count} values")
            return stream.read(stream.count)

    def _scalar(self, name: str) -> Any:
        with self._zip.open(self._members[name]) as member:
            shape, _, dtype = _npy_header(member)
            if shape != () or dtype.hasobject:
                raise ValueError(f"member {name!r} should be a scalar, has shape {shape}")
            data = member.read(dtype.itemsize)
            return np.frombuffer(data, dtype=dtype, count=1)[0].item()

    def _decode(self) -> Iterator[np.ndarray]:
        try:
            if self._columns is None:
                with self._member("events") as stream:
                    yield from self._structured(stream, self._names, self._truncated)
            else:
                yield from super()._decode()
        except SpikecutError:
            raise
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
            raise self._error(CorruptFileError, f"damaged archive member: {exc}") from exc

    def _iter_columns(self) -> Iterator[dict[str, np.ndarray]]:
        return self._column_blocks()

    def _column_blocks(self) -> Iterator[dict[str, np.ndarray]]:
        streams = {k: self._member(v) for k, v in self._columns.items()}
        try:
            counts = {k: s.count for k, s in streams.items()}
            if len(set(counts.values())) != 1:
                raise self._error(CorruptFileError, f"columns of unequal length {counts}")
            count = next(iter(counts.values()))
            done = 0
            while done < count:
                try:
                    block = {k: s.read(self.chunk_events) for k, s in streams.items()}
                except _ShortRead as short:
                    raise self._error(
                        TruncatedFileError, f"archive member ends early ({short})", index=done
                    ) from None
                done += block["t"].size
                yield block
        finally:
            for s in streams.values():
                s.close()

    def _truncated(self, short: _ShortRead, stream: _RowStream) -> Exception:
        return self._error(
            TruncatedFileError, f"member 'events' ends early ({short})", index=stream.read_rows
        )

    def close(self) -> None:
        archive = getattr(self, "_zip", None)
        if archive is not None:
            archive.close()
        super().close()


class _MemberStream(_RowStream):
    def __init__(self, file: IO[bytes], what: str) -> None:
        try:
            super().__init__(file, what)
        except BaseException:
            file.close()
            raise

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> _MemberStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _import_h5py() -> Any:
    try:
        import h5py
    except ImportError as exc:
        raise SourceUnavailableError(
            "HDF5 files need h5py, the optional extra 'hdf5': pip install 'spikecut[hdf5]'"
        ) from exc
    return h5py


class Hdf5Reader(_ArrayReader):
    format = "hdf5"

    def _open(self) -> tuple[int, int] | None:
        h5py = _import_h5py()
        try:
            self._h5 = h5py.File(self._file, "r")
        except (OSError, ValueError, RuntimeError) as exc:
            raise self._error(CorruptFileError, f"not a readable HDF5 file: {exc}") from exc
        try:
            group = self._h5.get("events")
            if group is None or not isinstance(group, h5py.Group):
                raise ValueError(f"no 'events' group (top level holds {sorted(self._h5)})")
            names = _field_names(tuple(group))
            if names is None:
                raise ValueError(f"'events' holds {sorted(group)}; datasets t, x, y, p are needed")
            self._datasets = {k: group[v] for k, v in names.items()}
            shapes = {k: d.shape for k, d in self._datasets.items()}
            if any(len(s) != 1 for s in shapes.values()) or len(set(shapes.values())) != 1:
                raise ValueError(f"event datasets must be 1-D and of equal length, got {shapes}")
            self._count = next(iter(shapes.values()))[0]
            attrs = {**dict(self._h5.attrs), **dict(group.attrs)}
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise self._error(CorruptFileError, str(exc)) from exc
        origin = attrs.get("time_origin")
        self._stored_origin = origin.decode() if isinstance(origin, bytes) else origin
        return _declared_size(attrs)

    def _iter_columns(self) -> Iterator[dict[str, np.ndarray]]:
        step = self.chunk_events
        for first in range(0, self._count, step):
            try:
                yield {k: d[first : first + step] for k, d in self._datasets.items()}
            except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
                raise self._error(
                    CorruptFileError, f"cannot read rows {first}..: {exc}", index=first
                ) from exc

    def close(self) -> None:
        h5 = getattr(self, "_h5", None)
        if h5 is not None:
            h5.close()
        super().close()


# --- writers ---------------------------------------------------------------------------------


def _npy_header_bytes(count: int) -> bytes:
    """A version 1.0 .npy header for `count` events whose length does not depend on `count`."""
    descr = np.lib.format.dtype_to_descr(EVENT_DTYPE)
    text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': ({count:20d},), }}"
    total = len(_NPY_MAGIC) + 2 + 2 + len(text) + 1
    text += " " * (-total % 64) + "\n"
    return _NPY_MAGIC + bytes([1, 0]) + struct.pack("<H", len(text)) + text.encode("latin-1")


class NpyWriter(EventWriter):
    """Structured EVENT_DTYPE rows; the header's row count is patched on close."""

    format = "npy"

    def _open(self) -> None:
        super()._open()
        self._file.write(_npy_header_bytes(0))

    def _write(self, events: np.ndarray) -> None:
        self._file.write(events.tobytes())

    def _finish(self) -> None:
        self._file.seek(0)
        self._file.write(_npy_header_bytes(self.events_written))


class NpzWriter(EventWriter):
    """`events` (streamed through a temporary .npy beside the target) plus `width`, `height`,
    `time_origin`, zipped uncompressed on close."""

    format = "npz"

    def _open(self) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".spikecut-", suffix=".npy", dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        self._inner = NpyWriter(self._tmp, self.info)

    def _write(self, events: np.ndarray) -> None:
        self._inner.write(events)

    def _finish(self) -> None:
        try:
            self._inner.close()
            with zipfile.ZipFile(self.path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
                archive.write(self._tmp, "events.npy")
                for name, value in (
                    ("width", np.int64(self.info.width)),
                    ("height", np.int64(self.info.height)),
                    ("time_origin", np.str_(self.info.time_origin)),
                ):
                    with archive.open(f"{name}.npy", "w") as member:
                        np.lib.format.write_array(member, np.asarray(value), allow_pickle=False)
        except BaseException:
            self.path.unlink(missing_ok=True)
            raise
        finally:
            self._tmp.unlink(missing_ok=True)

    def _abort(self) -> None:
        self._closed = True
        inner = getattr(self, "_inner", None)
        if inner is not None:
            inner._abort()
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            tmp.unlink(missing_ok=True)


class Hdf5Writer(EventWriter):
    """Resizable, chunked `events/{t,x,y,p}` datasets with size and time-origin attributes."""

    format = "hdf5"
    CHUNK_ROWS = 1 << 16

    def _open(self) -> None:
        h5py = _import_h5py()
        self._h5 = h5py.File(self.path, "w")
        group = self._h5.create_group("events")
        self._datasets = {
            name: group.create_dataset(
                name,
                shape=(0,),
                maxshape=(None,),
                dtype=EVENT_DTYPE[name],
                chunks=(self.CHUNK_ROWS,),
            )
            for name in "txyp"
        }
        for target in (self._h5, group):
            target.attrs["width"] = self.info.width
            target.attrs["height"] = self.info.height
        self._h5.attrs["time_origin"] = self.info.time_origin
        self._h5.attrs["source"] = self.info.source

    def _write(self, events: np.ndarray) -> None:
        n = self.events_written
        for name, ds in self._datasets.items():
            ds.resize((n + events.size,))
            ds[n:] = events[name]

    def _finish(self) -> None:
        self._h5.close()

    def _abort(self) -> None:
        self._closed = True
        h5 = getattr(self, "_h5", None)
        if h5 is not None:
            h5.close()
            self.path.unlink(missing_ok=True)


__all__ = [
    "Hdf5Reader",
    "Hdf5Writer",
    "NpyReader",
    "NpyWriter",
    "NpzReader",
    "NpzWriter",
]
