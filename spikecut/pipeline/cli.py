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
    _add_run_commands(commands)
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


def _roi(text: str) -> tuple[int, int, int, int]:
    """'82,2,476,476' -> (82, 2, 476, 476)."""
    try:
        roi = tuple(int(v) for v in text.split(","))
    except ValueError:
        roi = ()
    if len(roi) != 4 or min(roi) < 0 or min(roi[2:]) < 1:
        raise argparse.ArgumentTypeError(f"expected X,Y,WIDTH,HEIGHT in pixels, got {text!r}")
    return roi  # type: ignore[return-value]


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _add_run_commands(commands: argparse._SubParsersAction) -> None:
    def run_options(sub: argparse.ArgumentParser, segments: list[str], default: str) -> None:
        sub.add_argument(
            "--model",
            metavar="CKPT",
            help="checkpoint directory (default: the embedded demo model)",
        )
        sub.add_argument(
            "--segment",
            choices=segments,
            default=default,
            help=f"when a classification starts and ends (default: {default})",
        )
        sub.add_argument(
            "--activity-rate",
            type=_positive_float,
            default=10_000.0,
            metavar="EV_PER_S",
            help="activity segmentation: event rate that starts a segment (default 10000)",
        )
        sub.add_argument(
            "--quiet-rate",
            type=float,
            metavar="EV_PER_S",
            help="activity segmentation: below this rate the stream is quiet again "
            "(default: half the activity rate)",
        )
        sub.add_argument(
            "--quiet-windows",
            type=_positive_int,
            default=1,
            metavar="N",
            help="activity segmentation: quiet windows needed before the next segment (default 1)",
        )
        sub.add_argument(
            "--sink",
            action="append",
            metavar="SPEC",
            help="where decisions go: - (stdout, the default), a JSON-lines file path, or "
            "mqtt[s]://[user:pass@]host[:port]/prefix; repeatable",
        )
        sub.add_argument("--mqtt", metavar="URL", help="also publish to this MQTT broker URL")
        sub.add_argument(
            "--stream-id",
            action="append",
            metavar="ID",
            help="stream id, one per stream in order (default: INSTANCE.SOURCE)",
        )
        sub.add_argument(
            "--instance",
            metavar="NAME",
            help="this process's name: its MQTT status topic and default stream-id prefix "
            "(default: the host name)",
        )
        sub.add_argument(
            "--roi",
            type=_roi,
            metavar="X,Y,W,H",
            help="crop the sensor before binning (fits a bigger sensor to the network)",
        )
        sub.add_argument(
            "--downsample", type=_positive_int, metavar="N", help="downsample the frames by N"
        )
        sub.add_argument(
            "--no-cutoff",
            action="store_true",
            help="always run T timesteps (the baseline the cutoff is measured against)",
        )
        sub.add_argument(
            "--threads", type=_positive_int, default=1, help="torch threads per step (default 1)"
        )
        sub.add_argument(
            "--stats-interval",
            type=float,
            default=5.0,
            metavar="S",
            help="seconds between stats records on MQTT (0: only at the end; default 5)",
        )

    replay = commands.add_parser(
        "replay", help="classify recordings: each file is a stream, decisions as they happen"
    )
    replay.add_argument(
        "paths", nargs="+", metavar="PATH", help="event files (any readable format)"
    )
    replay.add_argument(
        "--speed",
        type=_positive_float,
        help="pace the replay: 1 = real time, 10 = ten times faster (default: full speed)",
    )
    replay.add_argument("--loop", action="store_true", help="replay the files again and again")
    replay.add_argument(
        "--playlist",
        action="store_true",
        help="play the files one after another as a single stream (the dataset case)",
    )
    run_options(replay, ["recording", "fixed", "activity"], "recording")
    replay.set_defaults(handler=_replay)

    live = commands.add_parser(
        "live", help="classify live streams (dv://, raw+tcp://, raw+pipe:, camera:, file:)"
    )
    live.add_argument(
        "uris",
        nargs="+",
        metavar="URI",
        help="dv://HOST:PORT, raw+tcp://HOST:PORT, raw+pipe:PATH, raw+stdin:, camera:[SERIAL], "
        "file:PATH?speed=1&loop=true",
    )
    run_options(live, ["fixed", "activity"], "fixed")
    live.set_defaults(handler=_live)

    demo = commands.add_parser(
        "demo", help="offline demo: the embedded model on emulated digits, in real time"
    )
    demo.add_argument("--model", metavar="CKPT", help="checkpoint (default: the embedded model)")
    demo.add_argument("--mqtt", metavar="URL", help="also publish the decisions to MQTT")
    demo.add_argument(
        "--count", type=_positive_int, default=30, help="recordings to classify (default 30)"
    )
    demo.add_argument(
        "--speed", type=_positive_float, default=1.0, help="replay speed (default 1: real time)"
    )
    demo.set_defaults(handler=_demo)


def _replay(args: argparse.Namespace) -> int:
    from spikecut.pipeline.app import replay_command

    return replay_command(args)


def _live(args: argparse.Namespace) -> int:
    from spikecut.pipeline.app import live_command

    return live_command(args)


def _demo(args: argparse.Namespace) -> int:
    from spikecut.pipeline.demo import demo_command

    return demo_command(args)


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
