"""Shared fixtures. Real recordings live in ../shared (read-only, not shipped with the package)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPIKECUT_SHARED", REPO.parent / "shared"))
REAL = SHARED / "data" / "real"
NMNIST_1K = SHARED / "data" / "nmnist_1k"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(
            f"{path} is absent: the real recordings live in ../shared next to the checkout "
            "(set SPIKECUT_SHARED to point elsewhere)"
        )
    return path


@pytest.fixture(scope="session")
def real_data() -> Path:
    """`../shared/data/real`: 27 real recordings described in its SOURCES.md."""
    return _require(REAL)


@pytest.fixture(scope="session")
def nmnist_1k() -> Path:
    """`../shared/data/nmnist_1k`: the first 1000 N-MNIST training samples with labels."""
    return _require(NMNIST_1K)


@pytest.fixture(scope="session")
def recordings(real_data: Path) -> list[Path]:
    """The 12 labelled N-MNIST test recordings (34x34, ~300 ms each) the pipeline tests replay."""
    return sorted((real_data / "atis_bin" / "nmnist_test_first12").glob("*.bin"))


@pytest.fixture(scope="session")
def checkpoint(recordings: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real checkpoint of the small 34x34 net, calibrated on those recordings."""
    from pipeline_helpers import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "digits", recordings)


@pytest.fixture(scope="module")
def model(checkpoint: Path):
    """The checkpoint loaded as a `StreamModel`, one per test module."""
    from spikecut.pipeline.runner import StreamModel

    return StreamModel.load(checkpoint)


MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)),
    None,
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


class Mosquitto:
    """A real mosquitto broker on free loopback ports, with its own config, persistence and log.

    `listeners` holds the config lines of each listener after the `listener PORT` line (the first
    one is `port`); persistence is on but only written on exit or `save()`, so a test decides
    exactly what survives a SIGKILL. Ports are kept across `start()` calls: a restarted broker is
    the same address.
    """

    def __init__(self, directory: Path, listeners: list[str]) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.listeners = listeners
        self.ports = [_free_port() for _ in listeners]
        self.process: subprocess.Popen | None = None
        self.config = directory / "mosquitto.conf"
        self.log = directory / "mosquitto.log"
        self.database = directory / "mosquitto.db"

    @property
    def port(self) -> int:
        return self.ports[0]

    def url(self, prefix: str = "spikecut", scheme: str = "mqtt", index: int = 0) -> str:
        return f"{scheme}://127.0.0.1:{self.ports[index]}/{prefix}"

    def start(self) -> None:
        lines = [
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.directory}/",
            "autosave_interval 0",
            "log_type all",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # else mosquitto drops to a user who cannot read tmp_path
        for port, listener in zip(self.ports, self.listeners, strict=True):
            lines += [f"listener {port} 127.0.0.1", listener]
        self.config.write_text("\n".join(lines) + "\n")
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )

        def listening() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited early:\n{self.log_tail()}")
            for port in self.ports:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                except OSError:
                    return False
            return True

        _wait_until(listening, 10, f"mosquitto to listen on {self.ports}")

    def signal(self, signum: int) -> None:
        assert self.process is not None and self.process.poll() is None, "broker not running"
        self.process.send_signal(signum)

    def pause(self) -> None:
        """SIGSTOP: the broker keeps its sockets but reads and acknowledges nothing."""
        self.signal(signal.SIGSTOP)

    def kill(self) -> None:
        """SIGKILL (also when paused): nothing since the last save survives."""
        self.signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM: a clean broker shutdown that saves its persistence database."""
        self.signal(signal.SIGTERM)
        self.process.wait(10)

    def save(self) -> None:
        """Write the persistence database now (SIGUSR1) and wait until it is on disk."""
        before = self.database.stat().st_mtime_ns if self.database.exists() else None
        self.signal(signal.SIGUSR1)
        _wait_until(
            lambda: self.database.exists() and self.database.stat().st_mtime_ns != before,
            10,
            "mosquitto to save its database",
        )

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(10)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@pytest.fixture
def make_mosquitto(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """Factory of started brokers: `make_mosquitto(listeners=[config lines per listener])`."""
    if MOSQUITTO is None:
        pytest.skip(
            "mosquitto is not installed: the MQTT tests need a real broker "
            "(`apt-get install mosquitto`; .ci/run installs it)"
        )
    brokers: list[Mosquitto] = []

    def make(listeners: list[str] | None = None) -> Mosquitto:
        broker = Mosquitto(tmp_path / f"mosquitto{len(brokers)}", listeners or [""])
        brokers.append(broker)
        broker.start()
        return broker

    yield make
    for broker in brokers:
        broker.close()
        print(f"--- {broker.log} (tail) ---\n{broker.log_tail()}")


@pytest.fixture
def mosquitto(make_mosquitto: Callable[..., Mosquitto]) -> Mosquitto:
    """A started plain-TCP mosquitto on a free loopback port; see `Mosquitto`."""
    return make_mosquitto()
