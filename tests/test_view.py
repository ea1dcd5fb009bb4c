"""`spikecut view`: grid and animation previews of what the network sees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spikecut.pipeline.cli import main
from spikecut.pipeline.view import preview_windows, to_rgb
from spikecut.sources.events import StreamInfo, make_events


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    """A 40x30 recording written with plain numpy: a bar of ON events moving right, OFF behind."""
    t, x, y, p = [], [], [], []
    for step in range(40):
        for row in range(5, 25):
            t += [step * 1_000 + row, step * 1_000 + row + 500]
            x += [step, max(step - 2, 0)]
            y += [row, row]
            p += [1, 0]
    path = tmp_path / "bar.npy"
    events = make_events(t, x, y, p)
    np.save(path, events[np.argsort(events["t"], kind="stable")])
    return path


def test_grid_png(recording: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "preview.png"
    assert main(["view", str(recording), "--out", str(out), "--panels", "6"]) == 0
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 200
    assert "6 windows, 1,600 of 1,600 events shown" in capsys.readouterr().out


def test_gif_has_one_frame_per_window(recording: Path, tmp_path: Path) -> None:
    out = tmp_path / "preview.gif"
    assert (
        main(["view", str(recording), "--out", str(out), "--window-us", "5000", "--panels", "5"])
        == 0
    )
    with Image.open(out) as image:
        assert image.format == "GIF" and image.n_frames == 5


def test_real_recording_with_fixed_windows(real_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "davis.svg"
    path = real_data / "aedat4/davis346_aestream_example.aedat4"
    code = main(
        [
            "view",
            str(path),
            "--out",
            str(out),
            "--window-us",
            "20000",
            "--panels",
            "4",
            "--downsample",
            "2",
        ]
    )
    assert code == 0 and out.read_text().lstrip().startswith("<?xml")


def test_bad_output_and_empty_input_are_clear_errors(
    recording: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["view", str(recording), "--out", str(tmp_path / "x.mp4")]) == 2
    assert ".gif" in capsys.readouterr().err
    empty = tmp_path / "empty.npy"
    np.save(empty, make_events([], [], [], []))
    assert main(["view", str(empty), "--out", str(tmp_path / "e.png"), "--sensor-size", "4x4"]) == 2
    assert "no events" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["view", str(recording), "--out", "x.png", "--panels", "0"])


def test_fixed_windows_show_only_the_first_panels() -> None:
    events = make_events(np.arange(0, 10_000, 10), np.zeros(1_000), np.zeros(1_000), np.ones(1_000))
    info = StreamInfo(width=2, height=2, source="test")
    binned = preview_windows(events, info, panels=3, window_us=1_000)
    assert binned.frames.shape == (3, 2, 2, 2)
    np.testing.assert_array_equal(binned.n_events, [100, 100, 100])
    whole = preview_windows(events, info, panels=4)
    assert whole.n_events.sum() == 1_000


def test_polarity_colours() -> None:
    frame = np.zeros((2, 1, 3))
    frame[1, 0, 0] = 4  # ON
    frame[0, 0, 1] = 4  # OFF
    rgb = to_rgb(frame, scale=4.0)
    assert rgb[0, 0, 0] > rgb[0, 0, 2]  # ON is red
    assert rgb[0, 1, 2] > rgb[0, 1, 0]  # OFF is blue
    np.testing.assert_array_equal(rgb[0, 2], [1.0, 1.0, 1.0])  # silent is white
