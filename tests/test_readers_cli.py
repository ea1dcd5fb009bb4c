"""`spikecut info` and `spikecut convert`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spikecut.pipeline.cli import main
from spikecut.sources import read_events

REPO = Path(__file__).resolve().parents[1]


def test_info_json_is_one_object_with_the_documented_keys(real_data, capsys):
    assert main(["info", "--json", str(real_data / "prophesee_raw/evt3_gen41_driving.raw")]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    summary = json.loads(out)
    assert {k: summary[k] for k in ("format", "width", "height", "events")} == {
        "format": "evt3", "width": 1280, "height": 720, "events": 219_596,
    }  # fmt: skip
    assert (summary["t_first_us"], summary["t_last_us"]) == (11_718_656, 11_727_457)
    assert summary["duration_us"] == 8801
    assert summary["rate_ev_per_s"] == pytest.approx(219_596 / 8801e-6)


def test_info_text(real_data, capsys):
    assert main(["info", str(real_data / "aedat4/dvxplorer_tonic_sample.aedat4")]) == 0
    out = capsys.readouterr().out
    for expected in ("aedat4 (iniVation AEDAT 4.0)", "320", "240", "111,954",
                     "1605537493718345 us", "589.917 ms", "kev/s", "unix"):  # fmt: skip
        assert expected in out


def test_info_of_an_empty_recording(real_data, capsys):
    path = real_data / "aedat2/davis346red_header_only_tonic.aedat"
    assert main(["info", "--json", str(path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["events"] == 0 and summary["t_first_us"] is None
    assert (summary["width"], summary["height"]) == (346, 260)


def test_info_errors_are_one_line_and_exit_2(tmp_path, real_data, capsys):
    path = tmp_path / "junk.txt"
    path.write_text("nothing to see")
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spikecut info: error: ") and err.count("\n") == 1
    bin_path = str(real_data / "atis_bin/nmnist_tonic_sample.bin")
    assert main(["info", bin_path, "--sensor-size", "10x10"]) == 2
    assert "outside the 10x10 sensor" in capsys.readouterr().err
    assert main(["info", bin_path, "--sensor-size", "10x10", "--lenient", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dropped_out_of_sensor"] == 4311


def test_convert_streams_between_formats(real_data, tmp_path, capsys):
    source = real_data / "prophesee_raw/evt3_gen41_driving.raw"
    target = tmp_path / "driving.h5"
    pytest.importorskip("h5py")
    assert main(["convert", str(source), str(target)]) == 0
    assert "wrote 219,596 events (evt3 -> hdf5)" in capsys.readouterr().out
    original, info = read_events(source)
    converted, converted_info = read_events(target)
    np.testing.assert_array_equal(converted, original)
    assert (converted_info.width, converted_info.height) == (info.width, info.height)
    again = tmp_path / "driving.anything"
    assert main(["convert", str(target), str(again), "--to", "evt2"]) == 0
    np.testing.assert_array_equal(read_events(again)[0], original)


def test_convert_refuses_same_file_and_unknown_output(real_data, tmp_path, capsys):
    source = real_data / "es/ncars_obj_004397_loris.es"
    assert main(["convert", str(source), str(source)]) == 2
    assert "same file" in capsys.readouterr().err
    assert main(["convert", str(source), str(tmp_path / "out.mp4")]) == 2
    assert "extension '.mp4'" in capsys.readouterr().err


def test_bad_sensor_size_argument(capsys):
    with pytest.raises(SystemExit):
        main(["info", "x.raw", "--sensor-size", "big"])
    assert "WIDTHxHEIGHT" in capsys.readouterr().err


def test_info_does_not_import_torch(real_data):
    code = (
        "import sys; from spikecut.pipeline.cli import main; "
        f"main(['info', {str(real_data / 'es/ncars_obj_004397_loris.es')!r}]); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
