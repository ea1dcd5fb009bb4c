"""`spikecut replay` / `spikecut live` as a user runs them: decisions out, one-line errors for bad
input, stream ids, and real processes sharing a real broker (instances, last will, Ctrl-C)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pipeline_helpers import (
    T,
    cumulative_outputs,
    offline_decisions,
    padded_frames,
)
from test_mqtt import Collector, retained, until

from spikecut.models import load_checkpoint, topk_gap
from spikecut.pipeline.app import stream_ids
from spikecut.pipeline.binning import WindowSpec
from spikecut.pipeline.cli import build_parser, main
from spikecut.pipeline.decision import Decision
from spikecut.sources import read_events

REPO = Path(__file__).resolve().parents[1]
PREFIX = "test/cli"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cli():
    """Run `spikecut ...` in this process; the logging it sets up is undone afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield lambda *argv: main([str(a) for a in argv])
    root.handlers[:], root.level = handlers, level


def read_jsonl(path: Path) -> list[Decision]:
    return [Decision.from_json(line) for line in path.read_text().splitlines()]


def test_replay_writes_the_offline_decisions(cli, recordings, checkpoint, tmp_path, capsys):
    out = tmp_path / "decisions.jsonl"
    files = recordings[:4]
    assert cli("replay", *files, "--model", checkpoint, "--playlist", "--stream-id", "eval",
               "--sink", out) == 0  # fmt: skip
    decisions = read_jsonl(out)
    expected = offline_decisions(checkpoint, files)
    assert [(d.stream, d.seq) for d in decisions] == [("eval", i) for i in range(4)]
    assert [(d.label, d.timesteps, d.exit) for d in decisions] == [
        (e.label, e.steps, e.exit) for e in expected
    ]
    summary = capsys.readouterr().err.strip().splitlines()
    assert summary == [summary[-1]] and "1 stream(s), 4 decision(s)" in summary[-1]

    # one stream per file by default, ids from the instance and the file names; --no-cutoff runs
    # every recording to T
    assert cli("replay", *files[:2], "--model", checkpoint, "--instance", "lab1", "--no-cutoff",
               "--sink", out) == 0  # fmt: skip
    forced = read_jsonl(out)[4:]
    assert sorted(d.stream for d in forced) == ["lab1.60001", "lab1.60002"]
    assert {(d.exit, d.timesteps) for d in forced} == {("forced", T)}


def test_bad_input_is_one_clear_line(cli, recordings, checkpoint, tmp_path, capsys):
    def error_of(*argv) -> str:
        assert cli(*argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        errors = [line for line in lines if ": error: " in line]
        assert len(errors) == 1, lines
        return errors[0]

    assert "not a checkpoint directory" in error_of(
        "replay", recordings[0], "--model", tmp_path / "nope"
    )
    assert "no such file" in error_of("replay", tmp_path / "missing.bin", "--model", checkpoint)
    assert "--stream-id given 1 time(s) for 2 stream(s)" in error_of(
        "replay", *recordings[:2], "--model", checkpoint, "--stream-id", "a"
    )
    assert "stream id 'a/b' is invalid" in error_of(
        "replay", recordings[0], "--model", checkpoint, "--stream-id", "a/b"
    )
    assert "unknown source scheme 'http:'" in error_of(
        "live", "http://camera", "--model", checkpoint
    )
    wide = error_of(
        "replay", REPO.parent / "shared/data/real/prophesee_dat/ncars_tonic_sample.dat",
        "--model", checkpoint,
    )  # fmt: skip
    assert "78x42 sensor" in wide and "--roi" in wide
    with pytest.raises(SystemExit) as exit_info:
        cli("replay", recordings[0], "--roi", "1,2,3")
    assert exit_info.value.code == 2
    assert "expected X,Y,WIDTH,HEIGHT" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli("live", "dv://cam", "--segment", "recording")
    assert "invalid choice: 'recording'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli("replay", recordings[0], "--stats-interval", "-1")
    assert "--stats-interval: expected a number >= 0, got '-1'" in capsys.readouterr().err


def test_the_readme_names_only_real_options():
    """Every --flag in the README's sections on running streams exists in the CLI (those of the
    tools/ scripts aside)."""
    readme = (REPO / "README.md").read_text()
    start = readme.index("## Classifying streams")
    text = readme[start : readme.index("\n## Training", start)]
    text = re.sub(r"`[^`]*tools/[^`]*`", "", text)
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    known = {
        flag
        for name in ("replay", "live", "demo")
        for action in commands[name]._actions
        for flag in action.option_strings
    }
    mentioned = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", text))
    assert mentioned and mentioned <= known, sorted(mentioned - known)


def test_stream_ids_are_unique_and_say_where_they_come_from():
    names = [
        "data/60001.bin",
        "other/60001.bin",
        "dv://cam3.lab:7777",
        "raw+tcp://10.0.0.2:9000",
        "camera:00000157",
        "raw+stdin:",
        "file:/x/y/drive.raw?speed=1",
    ]
    assert stream_ids(names, "lab1", None) == [
        "lab1.60001",
        "lab1.60001-2",
        "lab1.dv-cam3-lab-7777",
        "lab1.raw-tcp-10-0-0-2-9000",
        "lab1.camera-00000157",
        "lab1.raw-stdin",
        "lab1.drive",
    ]
    assert stream_ids(names[:2], "h", ["a", "b"]) == ["a", "b"]


class Spikecut:
    """A `python -m spikecut ...` child process with its output in files."""

    def __init__(self, tmp_path: Path, name: str, *argv) -> None:
        self.out = tmp_path / f"{name}.out"
        self.err = tmp_path / f"{name}.err"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "spikecut", *map(str, argv)],
                cwd=REPO,
                stdout=out,
                stderr=err,
            )

    async def wait(self, timeout_s: float = 30) -> int:
        return await asyncio.wait_for(asyncio.to_thread(self.process.wait), timeout_s)

    async def stop(self, signum: int) -> int:
        self.process.send_signal(signum)
        return await self.wait()

    def stderr(self) -> str:
        return self.err.read_text()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


async def test_live_processes_share_a_broker_die_and_stop_cleanly(
    mosquitto, recordings, checkpoint, tmp_path
):
    url = mosquitto.url(PREFIX)

    def live(name: str, recording: Path, *extra) -> Spikecut:
        return Spikecut(
            tmp_path, name, "live", f"file:{recording}?speed=1&loop=true", "--model", checkpoint,
            "--mqtt", url, "--sink", tmp_path / f"{name}.jsonl", "--stats-interval", "0.5",
            *extra,
        )  # fmt: skip

    async with Collector(mosquitto.port, f"{PREFIX}/#") as collector:
        alpha = live("alpha", recordings[0], "--instance", "alpha")
        beta = live("beta", recordings[1], "--instance", "beta")
        processes = [alpha, beta]
        try:

            def streams() -> set[str]:
                return {d.stream for d in collector.decisions()}

            await until(lambda: {"alpha.60001", "beta.60002"} <= streams(), 60, "both streams")
            for instance in ("alpha", "beta"):
                assert collector.statuses(f"{PREFIX}/status/{instance}") == ["online"]
            await until(lambda: collector.payloads("alpha.60001/stats"), what="alpha's stats")

            # a third process under a name already online refuses to start
            twin = live("twin", recordings[2], "--instance", "alpha")
            processes.append(twin)
            assert await twin.wait() == 2
            assert "instance 'alpha' is already online" in twin.stderr()
            assert "twin" not in "".join(streams())

            # SIGKILL: the broker publishes beta's last will; alpha is untouched
            assert await beta.stop(signal.SIGKILL) == -signal.SIGKILL
            await until(
                lambda: collector.statuses(f"{PREFIX}/status/beta") == ["online", "offline"],
                what="beta's last will",
            )
            assert await retained(mosquitto.port, f"{PREFIX}/status/alpha") == "online"

            # Ctrl-C: alpha flushes every decision it made, says offline and exits 0
            assert await alpha.stop(signal.SIGINT) == 0
            await until(
                lambda: collector.statuses(f"{PREFIX}/status/alpha") == ["online", "offline"],
                what="alpha offline",
            )
            made = read_jsonl(tmp_path / "alpha.jsonl")
            assert made and {d.seq for d in made} == set(collector.seqs("alpha.60001"))
            assert "interrupted" in alpha.stderr() and "error" not in alpha.stderr()
            assert "warning" not in alpha.stderr()  # nothing left unacknowledged
        finally:
            for process in processes:
                process.close()
    assert json.loads(collector.payloads("alpha.60001/stats")[-1])["decisions"] >= 1


async def test_ctrl_c_decides_the_segment_in_progress_before_going_offline(
    mosquitto, recordings, checkpoint, tmp_path
):
    url = mosquitto.url(PREFIX)
    jsonl = tmp_path / "slow.jsonl"
    async with Collector(mosquitto.port, f"{PREFIX}/#") as collector:
        # 1/20 of real time: a 30 ms window closes every 0.6 s, a T-window segment takes 6 s
        replay = Spikecut(tmp_path, "slow", "replay", recordings[2], "--model", checkpoint,
                          "--speed", "0.05", "--no-cutoff", "--instance", "slow", "--stream-id",
                          "slow", "--mqtt", url, "--sink", jsonl)  # fmt: skip
        try:
            status = f"{PREFIX}/status/slow"
            await until(lambda: collector.statuses(status) == ["online"], 60, "slow online")
            await asyncio.sleep(3)  # mid-segment
            assert await replay.stop(signal.SIGINT) == 0, replay.stderr()
        finally:
            replay.close()
        await until(lambda: collector.statuses(status) == ["online", "offline"], what="offline")
    (decision,) = collector.decisions()
    assert (decision.stream, decision.seq, decision.exit) == ("slow", 0, "interrupted")
    assert 1 <= decision.timesteps < T and decision.threshold is None
    assert read_jsonl(jsonl) == [decision]
    # published before the process said offline
    order = [(str(m.topic), bytes(m.payload)) for m in collector.messages]
    decided = next(i for i, (topic, _) in enumerate(order) if topic == f"{PREFIX}/slow/decision")
    assert decided < order.index((status, b"offline"))
    # decided with what it had: the network's output after its last window
    net, config = load_checkpoint(checkpoint)
    events, info = read_events(recordings[2])
    frames = padded_frames(events, info, WindowSpec.from_dict(config.windowing), T)
    y = cumulative_outputs(net, [frames])[decision.timesteps - 1, 0]
    assert decision.label == int(y.argmax())
    assert decision.gap == pytest.approx(float(topk_gap(y)), rel=1e-4, abs=1e-6)
    summary = replay.stderr().strip().splitlines()[-1]
    assert "1 decision(s) (0 cutoff, 1 interrupted)" in summary and summary.endswith("interrupted")


def test_demo_prints_each_decision_and_a_summary(cli, checkpoint, capsys):
    # --model: the test checkpoint (random weights), so only the mechanics are checked here
    assert cli("demo", "--model", checkpoint, "--count", "4", "--speed", "20") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("spikecut demo: model digits:") and "4 emulated digits" in lines[0]
    decisions = [line for line in lines if line.startswith("[")]
    assert [line[:7] for line in decisions] == ["[  1/4]", "[  2/4]", "[  3/4]", "[  4/4]"]
    assert all("latency" in line and "accuracy" in line for line in decisions)
    summary = "\n".join(lines[len(decisions) + 1 :])
    for field in ("4 recording(s)", "accuracy", f"of T={T}", "p50", "p99"):
        assert field in summary


@pytest.mark.skipif(
    not (REPO / "spikecut" / "assets" / "demo" / "config.json").is_file(),
    reason="the embedded demo model (spikecut/assets/demo) is not in this checkout",
)
async def test_demo_with_the_embedded_model_publishes_to_mqtt(mosquitto, tmp_path):
    async with Collector(mosquitto.port, f"{PREFIX}/#") as collector:
        demo = Spikecut(tmp_path, "demo", "demo", "--count", "10", "--speed", "10",
                        "--mqtt", mosquitto.url(PREFIX))  # fmt: skip
        try:
            assert await demo.wait(60) == 0, demo.stderr()
        finally:
            demo.close()
        await until(lambda: len(collector.decisions()) == 10, what="10 decisions")
    out = demo.out.read_text()
    printed = [line for line in out.splitlines() if line.startswith("[")]
    assert len(printed) == 10
    labels = [line.split("-> ")[1].split()[0] for line in printed]
    assert [d.label_name for d in sorted(collector.decisions(), key=lambda d: d.seq)] == labels
    accuracy = float(out.split("accuracy")[-1].split("%")[0])
    assert accuracy >= 70  # a trained model on digits it never saw
