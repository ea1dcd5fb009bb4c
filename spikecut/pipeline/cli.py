"""The `spikecut` console script.

Each subcommand is declared here (arguments only) and imports its implementation lazily, so
`spikecut info` never pays for importing torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from spikecut import __version__
from spikecut.errors import SpikecutError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spikecut",
        description="Event-camera streams in, early spiking-network decisions out.",
    )
    parser.add_argument("--version", action="version", version=f"spikecut {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_file_commands(commands)
    _add_view_command(commands)
    return parser


def _sensor_size(text: str) -> tuple[int, int]:
    """'346x260' -> (346, 260)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT such as 346x260, got {text!r}"
        ) from None
    if not (0 < width <= 65535 and 0 < height <= 65535):
        raise argparse.ArgumentTypeError(f"width and height must be in 1..65535, got {text!r}")
    return width, height


def _add_file_commands(commands: argparse._SubParsersAction) -> None:
    def read_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--lenient",
            action="store_true",
            help="drop out-of-sensor or backwards events and stop quietly at a damaged tail",
        )
        sub.add_argument(
            "--sensor-size",
            type=_sensor_size,
            metavar="WxH",
            help="sensor size to use instead of the file's (or the pre-scan's)",
        )

    info = commands.add_parser(
        "info", help="format, sensor size, event count, time range and rate of an event file"
    )
    info.add_argument("path", help="event file (AEDAT 2/3.1/4, RAW EVT2/3, DAT, ES, .bin, ...)")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.add_argument("--format", help="skip detection: the file's format name")
    read_options(info)
    info.set_defaults(handler=_info)

    convert = commands.add_parser("convert", help="convert an event file to another format")
    convert.add_argument("input", help="event file to read")
    convert.add_argument(
        "output", help="file to write; its extension picks the format unless --to is given"
    )
    convert.add_argument("--from", dest="in_format", help="skip detection of the input format")
    convert.add_argument(
        "--to", dest="out_format", help="output format (npy, npz, hdf5, aedat4, aedat3, ...)"
    )
    read_options(convert)
    convert.set_defaults(handler=_convert)


def _add_view_command(commands: argparse._SubParsersAction) -> None:
    view = commands.add_parser(
        "view",
        help="render a recording as the windows a network sees (grid image or animated GIF)",
    )
    view.add_argument("path", help="event file (any format `spikecut info` reads)")
    view.add_argument(
        "--out", required=True, help="output: .png/.jpg/.pdf/.svg for a grid, .gif for animation"
    )
    view.add_argument(
        "--window-us",
        type=_positive_int,
        help="window length in µs from the first event (default: --panels equal windows over "
        "the whole recording)",
    )
    view.add_argument("--panels", type=_positive_int, default=16, help="number of windows shown")
    view.add_argument("--cols", type=_positive_int, help="grid columns (default: about square)")
    view.add_argument(
        "--downsample", type=_positive_int, default=1, help="integer spatial downsampling factor"
    )
    view.add_argument("--fps", type=float, default=5.0, help="GIF frames per second")
    view.add_argument("--format", help="skip detection: the file's format name")
    view.add_argument("--lenient", action="store_true", help="drop bad events instead of failing")
    view.add_argument(
        "--sensor-size", type=_sensor_size, metavar="WxH", help="override the file's sensor size"
    )
    view.set_defaults(handler=_view)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _view(args: argparse.Namespace) -> int:
    from spikecut.pipeline.view import view_command

    return view_command(args)


def _info(args: argparse.Namespace) -> int:
    from spikecut.sources.commands import info_command

    return info_command(args)


def _convert(args: argparse.Namespace) -> int:
    from spikecut.sources.commands import convert_command

    return convert_command(args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except SpikecutError as exc:
        print(f"spikecut {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
