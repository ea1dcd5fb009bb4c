"""One entry point for event files: detect the format, open a reader or a writer.

Detection reads the magic bytes first (`#!AER-DAT4.0`, `#!AER-DAT3.1`, `#!AER-DAT2.0`,
`Event Stream`, the npy magic, zip, HDF5 signature, a Prophesee `%` header that names EVT 2.0/3.0
or a DAT file) and falls back on the extension only when the bytes say nothing. A file whose
extension promises a format with magic bytes but whose bytes do not match is handed to that
format's reader, which reports the mismatch at byte offset 0.

Format names: aedat4, aedat3 (AEDAT 3.1), aedat2 (jAER AEDAT 1.0/2.0), evt2, evt3, dat, es,
atis_bin, npy, npz, hdf5.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spikecut.errors import EventFileError, UnknownFormatError
from spikecut.sources.events import StreamInfo
from spikecut.sources.reader import DEFAULT_CHUNK_EVENTS, EventReader, header_lines
from spikecut.sources.writer import EventWriter


@dataclass(frozen=True)
class FileFormat:
    name: str
    description: str
    reader: str
    writer: str | None
    extensions: tuple[str, ...]


FORMATS: dict[str, FileFormat] = {
    f.name: f
    for f in (
        FileFormat(
            "aedat4",
            "iniVation AEDAT 4.0",
            "aedat4:Aedat4Reader",
            "aedat4:Aedat4Writer",
            (".aedat4",),
        ),
        FileFormat("aedat3", "cAER AEDAT 3.1", "jaer:Aedat31Reader", "jaer:Aedat31Writer", ()),
        FileFormat("aedat2", "jAER AEDAT 1.0/2.0", "jaer:Aedat2Reader", None, (".aedat",)),
        FileFormat(
            "evt3", "Prophesee RAW EVT 3.0", "prophesee:Evt3Reader", "prophesee:Evt3Writer", ()
        ),
        FileFormat(
            "evt2", "Prophesee RAW EVT 2.0", "prophesee:Evt2Reader", "prophesee:Evt2Writer", ()
        ),
        FileFormat(
            "dat", "Prophesee DAT v2", "prophesee:DatReader", "prophesee:DatWriter", (".dat",)
        ),
        FileFormat(
            "es",
            "Event Stream 2.x (DVS)",
            "eventstream:EventStreamReader",
            "eventstream:EventStreamWriter",
            (".es",),
        ),
        FileFormat(
            "atis_bin",
            "N-MNIST/N-Caltech101 ATIS .bin",
            "atis:AtisBinReader",
            "atis:AtisBinWriter",
            (".bin",),
        ),
        FileFormat(
            "npy", "numpy structured array", "arrays:NpyReader", "arrays:NpyWriter", (".npy",)
        ),
        FileFormat("npz", "numpy archive", "arrays:NpzReader", "arrays:NpzWriter", (".npz",)),
        FileFormat(
            "hdf5",
            "HDF5 events/{t,x,y,p}",
            "arrays:Hdf5Reader",
            "arrays:Hdf5Writer",
            (".h5", ".hdf5"),
        ),
    )
}

#: Extensions that choose a writer when no format is named (".aedat" writes AEDAT 3.1 and
#: ".raw" writes EVT 3.0, the formats of those extensions we can write).
WRITE_EXTENSIONS = {
    ".aedat4": "aedat4",
    ".aedat": "aedat3",
    ".raw": "evt3",
    ".dat": "dat",
    ".es": "es",
    ".bin": "atis_bin",
    ".npy": "npy",
    ".npz": "npz",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
}

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Magic bytes at the start of a file, and the format they announce.
_MAGIC = (
    (b"#!AER-DAT4", "aedat4"),
    (b"#!AER-DAT3", "aedat3"),
    ((b"#!AER-DAT2", b"#!AER-DAT1"), "aedat2"),
    (b"Event Stream", "es"),
    (b"\x93NUMPY", "npy"),
    ((b"PK\x03\x04", b"PK\x05\x06"), "npz"),
)


def _load(spec: str) -> type:
    module, name = spec.split(":")
    return getattr(importlib.import_module(f"spikecut.sources.{module}"), name)


def _percent_header_format(path: Path) -> str | None:
    from spikecut.sources.prophesee import raw_header_version

    try:
        with open(path, "rb") as file:
            lines, _ = header_lines(file, b"%", end=b"% end", path=path)
    except EventFileError:
        return None  # not a text header after all (e.g. a .bin whose first x is 37)
    version = raw_header_version(lines)
    if version in ("evt2", "evt3"):
        return version
    if version is not None:
        raise UnknownFormatError(
            f"Prophesee RAW {version.upper()} is not supported (EVT 2.0 and 3.0 are)", path=path
        )
    text = "\n".join(lines).lower()
    if "data file containing" in text or "% version" in text:
        return "dat"
    return None


def detect_format(path: str | Path) -> str:
    """The format name of `path`: magic bytes first, extension second."""
    path = Path(path)
    try:
        with open(path, "rb") as file:
            head = file.read(1100)
    except FileNotFoundError as exc:
        raise EventFileError("no such file", path=path) from exc
    except IsADirectoryError as exc:
        raise EventFileError("is a directory, not an event file", path=path) from exc
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if any(head[o : o + 8] == _HDF5_SIGNATURE for o in (0, 512, 1024)):
        return "hdf5"
    suffix = path.suffix.lower()
    if head.startswith(b"%"):
        found = _percent_header_format(path)
        if found is not None:
            return found
    for fmt in FORMATS.values():
        if suffix in fmt.extensions:
            return fmt.name
    if head.startswith(b"%"):
        raise UnknownFormatError(
            "a '%' header that names no EVT version and no DAT content; pass format='evt2', "
            "'evt3' or 'dat'",
            path=path,
        )
    what = "an empty file" if not head else f"first bytes {head[:12]!r}"
    raise UnknownFormatError(
        f"{what} and extension {suffix or '(none)'!r} match no supported format "
        f"({', '.join(FORMATS)})",
        path=path,
    )


def _check_format(name: str) -> FileFormat:
    if name not in FORMATS:
        raise UnknownFormatError(f"unknown format {name!r}; supported: {', '.join(FORMATS)}")
    return FORMATS[name]


def _check_sensor_size(sensor_size: tuple[int, int] | None) -> tuple[int, int] | None:
    if sensor_size is None:
        return None
    try:
        width, height = (int(v) for v in sensor_size)
    except (TypeError, ValueError):
        raise ValueError(f"sensor_size must be (width, height), got {sensor_size!r}") from None
    if not (0 < width <= 65535 and 0 < height <= 65535):
        raise ValueError(f"sensor_size must be two integers in 1..65535, got {sensor_size!r}")
    return width, height


def open_reader(
    path: str | Path,
    *,
    chunk_events: int = DEFAULT_CHUNK_EVENTS,
    lenient: bool = False,
    sensor_size: tuple[int, int] | None = None,
    format: str | None = None,
) -> EventReader:
    """A reader for `path`: iterate it for time-ordered chunks of at most `chunk_events`.

    `sensor_size=(width, height)` overrides what the file declares (or the pre-scan). `lenient`
    drops out-of-sensor and backwards events (counted in `reader.stats`) and ends quietly at a
    damaged tail (`reader.stats.error`). `format` skips detection.
    """
    name = format or detect_format(path)
    reader_class = _load(_check_format(name).reader)
    return reader_class(
        path,
        chunk_events=chunk_events,
        lenient=lenient,
        sensor_size=_check_sensor_size(sensor_size),
    )


def read_events(
    path: str | Path,
    *,
    lenient: bool = False,
    sensor_size: tuple[int, int] | None = None,
    format: str | None = None,
) -> tuple[np.ndarray, StreamInfo]:
    """Every event of `path` in one array, and the stream's `StreamInfo`."""
    with open_reader(path, lenient=lenient, sensor_size=sensor_size, format=format) as reader:
        return reader.read_all(), reader.info


def writer_format(path: str | Path, format: str | None = None) -> str:
    if format is not None:
        return format
    suffix = Path(path).suffix.lower()
    if suffix not in WRITE_EXTENSIONS:
        raise UnknownFormatError(
            f"cannot tell the output format from extension {suffix or '(none)'!r}; use one of "
            f"{', '.join(WRITE_EXTENSIONS)} or pass format=",
            path=path,
        )
    return WRITE_EXTENSIONS[suffix]


def open_writer(path: str | Path, info: StreamInfo, *, format: str | None = None) -> EventWriter:
    """A streaming writer: `write(chunk)` time-ordered chunks, then `close()` (or use `with`)."""
    fmt = _check_format(writer_format(path, format))
    if fmt.writer is None:
        raise UnknownFormatError(f"writing {fmt.description} is not supported", path=path)
    return _load(fmt.writer)(path, info)


def write_events(
    path: str | Path, events: np.ndarray, info: StreamInfo, *, format: str | None = None
) -> None:
    """Write `events` to `path`, the format chosen by `format` or the extension (.npy, .npz,
    .h5/.hdf5, .aedat4, .aedat (AEDAT 3.1), .raw (EVT 3.0), .dat, .es, .bin)."""
    with open_writer(path, info, format=format) as writer:
        writer.write(events)


__all__ = [
    "FORMATS",
    "detect_format",
    "open_reader",
    "open_writer",
    "read_events",
    "write_events",
]
