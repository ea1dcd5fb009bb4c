"""`spikecut info` and `spikecut convert`: what they compute, separate from argument parsing."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from spikecut.errors import ConfigError
from spikecut.sources.files import FORMATS, open_reader, open_writer, writer_format


def file_summary(
    path: str | Path,
    *,
    lenient: bool = False,
    sensor_size: tuple[int, int] | None = None,
    format: str | None = None,
) -> dict[str, Any]:
    """Format, sensor size, event count, first/last timestamp, duration and mean rate of a file,
    computed in one streaming pass."""
    count = 0
    t_first = t_last = None
    with open_reader(path, lenient=lenient, sensor_size=sensor_size, format=format) as reader:
        for chunk in reader:
            if t_first is None:
                t_first = int(chunk["t"][0])
            t_last = int(chunk["t"][-1])
            count += chunk.size
        info, stats = reader.info, reader.stats
    duration = None if t_first is None else t_last - t_first
    rate = count / (duration * 1e-6) if duration else None
    return {
        "path": str(path),
        "format": info.format,
        "width": info.width,
        "height": info.height,
        "events": count,
        "t_first_us": t_first,
        "t_last_us": t_last,
        "duration_us": duration,
        "rate_ev_per_s": rate,
        "time_origin": info.time_origin,
        "dropped_out_of_sensor": stats.dropped_out_of_sensor,
        "dropped_backwards": stats.dropped_backwards,
        "clamped_backwards": stats.clamped_backwards,
        "error": None if stats.error is None else str(stats.error),
    }


def _duration_text(us: int | None) -> str:
    if us is None:
        return "-"
    if us >= 1_000_000:
        return f"{us / 1e6:.3f} s"
    return f"{us / 1e3:.3f} ms"


def _rate_text(rate: float | None) -> str:
    if rate is None:
        return "-"
    for unit, scale in (("Mev/s", 1e6), ("kev/s", 1e3)):
        if rate >= scale:
            return f"{rate / scale:.2f} {unit}"
    return f"{rate:.1f} ev/s"


def info_command(args: argparse.Namespace) -> int:
    summary = file_summary(
        args.path, lenient=args.lenient, sensor_size=args.sensor_size, format=args.format
    )
    if args.json:
        print(json.dumps(summary))
        return 0
    fmt = FORMATS[summary["format"]].description
    rows = [
        ("file", summary["path"]),
        ("format", f"{summary['format']} ({fmt})"),
        ("width", summary["width"]),
        ("height", summary["height"]),
        ("events", f"{summary['events']:,}"),
        ("t_first", "-" if summary["t_first_us"] is None else f"{summary['t_first_us']} us"),
        ("t_last", "-" if summary["t_last_us"] is None else f"{summary['t_last_us']} us"),
        ("duration", _duration_text(summary["duration_us"])),
        ("mean rate", _rate_text(summary["rate_ev_per_s"])),
        ("time origin", summary["time_origin"]),
    ]
    for key in ("dropped_out_of_sensor", "dropped_backwards", "clamped_backwards"):
        if summary[key]:
            rows.append((key.replace("_", " "), f"{summary[key]:,}"))
    if summary["error"]:
        rows.append(("stopped at", summary["error"]))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def convert_file(
    source: str | Path,
    target: str | Path,
    *,
    lenient: bool = False,
    sensor_size: tuple[int, int] | None = None,
    in_format: str | None = None,
    out_format: str | None = None,
) -> dict[str, Any]:
    """Stream `source` into `target` chunk by chunk (bounded memory)."""
    if Path(source).resolve() == Path(target).resolve():
        raise ConfigError(f"{source}: input and output are the same file")
    out_format = writer_format(target, out_format)
    with (
        open_reader(source, lenient=lenient, sensor_size=sensor_size, format=in_format) as reader,
        open_writer(target, reader.info, format=out_format) as writer,
    ):
        for chunk in reader:
            writer.write(chunk)
        stats = reader.stats
    return {
        "source": str(source),
        "target": str(target),
        "from": reader.format,
        "to": out_format,
        "events": writer.events_written,
        "dropped": stats.dropped,
        "error": None if stats.error is None else str(stats.error),
    }


def convert_command(args: argparse.Namespace) -> int:
    result = convert_file(
        args.input,
        args.output,
        lenient=args.lenient,
        sensor_size=args.sensor_size,
        in_format=args.in_format,
        out_format=args.out_format,
    )
    print(
        f"{result['target']}: wrote {result['events']:,} events ({result['from']} -> "
        f"{result['to']})"
    )
    if result["dropped"]:
        print(f"dropped {result['dropped']:,} events (lenient)")
    if result["error"]:
        print(f"stopped early: {result['error']}")
    return 0
