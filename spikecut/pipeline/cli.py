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
    parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    return parser


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
