"""Decode the real recordings with our readers and with the reference decoders, check that both
give the same events, and print throughput and ratios measured in the same run.

    python tools/bench_readers.py [--json] [--repeat N] [--copies N]

References: expelliarmus (EVT 2.0, EVT 3.0, DAT), aedat (AEDAT 4.0), tonic.io (N-MNIST .bin;
its raw AEDAT 2.0 word parser, plus the documented address formulas in numpy), `np.load` (.npy
files holding the tiled DAT's events, as our writer stores them and in tonic's layout: numpy
reads the file in one go and checks nothing, which is as fast as reading it can be).

Small files are tiled into bigger ones first so timings mean something: Prophesee payloads are
repeated with their TIME_HIGH words (or DAT timestamps) shifted so time keeps increasing; the
other files are decoded whole, several times per sample so a sample lasts about 20 ms. Ours and
the reference alternate for `--repeat` samples, both reading the same file from the page cache;
the table reports medians (the machine is shared) and, beside them, best-sample ratios. "ours"
is the public path `read_events(path)`: format detection, header, decoding, validation of sensor
bounds and time order, and sizing the sensor where the file declares none (N-CARS DAT).

Targets (issue 2): ours at least as fast as expelliarmus on EVT2/EVT3/DAT (ratio >= 1), and our
AEDAT4 path within 1.2x of bare aedat decoding (ratio >= 1/1.2).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from spikecut.sources import read_events, write_events  # noqa: E402
from spikecut.sources.events import to_tonic  # noqa: E402
from spikecut.sources.reader import header_lines  # noqa: E402

REAL = REPO.parent / "shared" / "data" / "real"


def _split_header(path: Path) -> tuple[bytes, bytes]:
    with open(path, "rb") as file:
        _, offset = header_lines(file, b"%", end=b"% end")
    data = path.read_bytes()
    return data[:offset], data[offset:]


def tile_raw(path: Path, out: Path, copies: int, word: str, type_shift: int, th_mask: int) -> None:
    """Repeat a RAW payload, shifting TIME_HIGH so each copy starts after the previous one."""
    header, payload = _split_header(path)
    words = np.frombuffer(
        payload[: len(payload) // np.dtype(word).itemsize * np.dtype(word).itemsize], word
    )
    is_th = (words >> type_shift) == 0x8
    th = (words & th_mask).astype(np.int64)
    span = int(th[is_th].max() - th[is_th].min() + 1)
    if int(th[is_th].max()) + (copies - 1) * span > th_mask:
        raise SystemExit(f"{path.name}: too many copies for its TIME_HIGH range")
    parts = [header]
    for k in range(copies):
        shifted = words.copy()
        shifted[is_th] = (0x8 << type_shift) | (th[is_th] + k * span)
        parts.append(shifted.tobytes())
    out.write_bytes(b"".join(parts))


def tile_dat(path: Path, out: Path, copies: int) -> None:
    data = path.read_bytes()
    with open(path, "rb") as file:
        _, offset = header_lines(file, b"%", end=b"% end")
    head, body = data[: offset + 2], data[offset + 2 :]
    records = np.frombuffer(body, "<u4").reshape(-1, 2)
    period = int(records[:, 0].max()) + 1
    parts = [head]
    for k in range(copies):
        shifted = records.copy()
        shifted[:, 0] += k * period
        parts.append(shifted.tobytes())
    out.write_bytes(b"".join(parts))


def _sample(fn: Callable[[], object], inner: int) -> float:
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - start) / inner


def _inner(fn: Callable[[], object]) -> int:
    """Calls per sample so that one sample lasts about 20 ms (small files)."""
    return max(1, int(0.02 / max(_sample(fn, 1), 1e-6)))


def samples(fn: Callable[[], object], repeat: int) -> list[float]:
    inner = _inner(fn)
    return [_sample(fn, inner) for _ in range(repeat)]


def interleaved(ours: Callable, ref: Callable, repeat: int) -> tuple[list[float], list[float]]:
    """Per-call times of each, samples alternating so both see the same machine load."""
    inner_ours, inner_ref = _inner(ours), _inner(ref)
    t_ours, t_ref = [], []
    for _ in range(repeat):
        t_ours.append(_sample(ours, inner_ours))
        t_ref.append(_sample(ref, inner_ref))
    return t_ours, t_ref


# --- reference decoders ------------------------------------------------------------------------


def expelliarmus_reader(encoding: str) -> Callable[[Path], np.ndarray]:
    from expelliarmus import Wizard

    def read(path: Path) -> np.ndarray:
        return Wizard(encoding=encoding).read(str(path))

    return read


def aedat_reader(path: Path) -> np.ndarray:
    import aedat

    decoder = aedat.Decoder(str(path))
    stream = min(i for i, s in decoder.id_to_stream().items() if s["type"] == "events")
    return np.concatenate([p["events"] for p in decoder if p["stream_id"] == stream])


def tonic_mnist_reader(path: Path) -> np.ndarray:
    import tonic.io

    dtype = np.dtype([("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])
    return tonic.io.read_mnist_file(str(path), dtype=dtype)


def tonic_aedat2_reader(path: Path) -> np.ndarray:
    """tonic.io parses the big-endian words; the DAVIS240C layout and jAER orientation are
    applied here with numpy (see spikecut/sources/jaer.py)."""
    import tonic.io

    version, start, _ = tonic.io.read_aedat_header_from_file(str(path))
    words = tonic.io.get_aer_events_from_file(str(path), version, start)
    a = words["address"].astype(np.int64)
    keep = (a & 0x80000400) == 0
    a = a[keep]
    out = np.empty(a.size, dtype=[("t", "<i8"), ("x", "<i8"), ("y", "<i8"), ("p", "<i8")])
    out["t"] = words["timeStamp"][keep]
    out["x"] = 239 - ((a >> 12) & 0x3FF)
    out["y"] = 179 - ((a >> 22) & 0x1FF)
    out["p"] = (a >> 11) & 1
    return out


def same_events(ours: np.ndarray, ref: np.ndarray, fields: str) -> None:
    if ours.size != ref.size:
        raise SystemExit(f"event counts differ: ours {ours.size}, reference {ref.size}")
    ref_p = "on" if "on" in (ref.dtype.names or ()) else "p"
    for field in fields:
        other = ref[ref_p if field == "p" else field]
        if not np.array_equal(ours[field].astype(np.int64), other.astype(np.int64)):
            raise SystemExit(f"field {field} differs from the reference")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per decoder (best)")
    parser.add_argument("--copies", type=int, default=10, help="tiling factor for RAW files")
    parser.add_argument("--data", type=Path, default=REAL, help="folder of the real recordings")
    parser.add_argument("--only", help="run only the cases whose name contains this text")
    args = parser.parse_args()
    if not args.data.exists():
        raise SystemExit(f"{args.data} is absent: the bench needs the real recordings")

    tmp = Path(tempfile.mkdtemp(prefix="spikecut-bench-"))
    raw = args.data / "prophesee_raw"
    tile_raw(raw / "evt2_gen3_sparklers.raw", tmp / "evt2.raw", args.copies, "<u4", 28, 0x0FFFFFFF)
    tile_raw(raw / "evt3_gen41_driving.raw", tmp / "evt3.raw", 2 * args.copies, "<u2", 12, 0xFFF)
    tile_dat(
        args.data / "prophesee_dat/ncars_obj_004397_td.dat", tmp / "ncars.dat", 50 * args.copies
    )

    # Arrays: what our writer stores (EVENT_DTYPE rows) and tonic's layout (x, y, t, p int64),
    # against numpy loading the same file with no checks at all.
    dat_events, dat_info = read_events(tmp / "ncars.dat")
    write_events(tmp / "ours.npy", dat_events, dat_info)
    np.save(tmp / "tonic.npy", to_tonic(dat_events))
    del dat_events

    # name, file, reference name, reference, compared fields, target ratio (ours/ref speed)
    real, expel = args.data, expelliarmus_reader
    cases = [
        ("EVT2 sparklers", tmp / "evt2.raw", "expelliarmus", expel("evt2"), "txyp", 1.0),
        ("EVT3 driving (vectors)", tmp / "evt3.raw", "expelliarmus", expel("evt3"), "xyp", 1.0),
        ("DAT N-CARS", tmp / "ncars.dat", "expelliarmus", expel("dat"), "txyp", 1.0),
        ("AEDAT4 DAVIS346", real / "aedat4/davis346_aestream_example.aedat4", "aedat",
         aedat_reader, "txyp", 1 / 1.2),
        ("AEDAT4 DVXplorer", real / "aedat4/dvxplorer_tonic_sample.aedat4", "aedat",
         aedat_reader, "txyp", 1 / 1.2),
        ("AEDAT2 DAVIS240C", real / "aedat2/davis240c_IMU_translBoxes.aedat", "tonic.io+numpy",
         tonic_aedat2_reader, "txyp", None),
        ("ATIS .bin N-MNIST", real / "atis_bin/nmnist_tonic_sample.bin", "tonic.io",
         tonic_mnist_reader, "txyp", None),
        ("ES N-CARS", real / "es/ncars_obj_004397_loris.es", None, None, "", None),
        (".npy EVENT_DTYPE", tmp / "ours.npy", "np.load", np.load, "txyp", None),
        (".npy tonic layout", tmp / "tonic.npy", "np.load", np.load, "txyp", None),
    ]  # fmt: skip

    rows = []
    for name, path, ref_name, ref, fields, target in cases:
        if args.only and args.only.lower() not in name.lower():
            continue
        ours_events, _ = read_events(path)  # also compiles/loads the kernels
        n = ours_events.size
        row = {"case": name, "file": path.name, "events": n, "reference": ref_name}
        if ref is None:
            t_ours = float(np.median(samples(lambda p=path: read_events(p), args.repeat)))
            row.update(ours_mev_s=n / t_ours / 1e6)
        else:
            same_events(ours_events, ref(path), fields)
            s_ours, s_ref = interleaved(
                lambda p=path: read_events(p), lambda p=path, r=ref: r(p), args.repeat
            )
            t_ours, t_ref = float(np.median(s_ours)), float(np.median(s_ref))
            ratio = t_ref / t_ours
            row.update(
                ours_mev_s=n / t_ours / 1e6,
                ref_mev_s=n / t_ref / 1e6,
                ratio=ratio,
                best_ratio=min(s_ref) / min(s_ours),
                compared=fields,
                target=target,
                meets_target=None if target is None else ratio >= target,
            )
        rows.append(row)

    for file in tmp.iterdir():
        file.unlink()
    tmp.rmdir()
    if args.json:
        print(json.dumps({"repeat": args.repeat, "copies": args.copies, "results": rows}))
        return 0
    print(f"{'case':<24} {'events':>10} {'ours Mev/s':>11} {'ref Mev/s':>10} {'ratio':>6} "
          f"{'best':>5}  reference (fields compared), target")  # fmt: skip
    for r in rows:
        ref_rate = f"{r['ref_mev_s']:10.1f}" if "ref_mev_s" in r else f"{'-':>10}"
        ratio = f"{r['ratio']:6.2f}" if "ratio" in r else f"{'-':>6}"
        ratio += f" {r['best_ratio']:5.2f}" if "best_ratio" in r else f" {'-':>5}"
        ref = f"{r['reference']} ({r['compared']})" if r["reference"] else "none installed"
        target = ""
        if r.get("target") is not None:
            verdict = "ok" if r["meets_target"] else "MISSED"
            target = f", ratio >= {r['target']:.2f}: {verdict}"
        print(f"{r['case']:<24} {r['events']:>10,} {r['ours_mev_s']:11.1f} {ref_rate} {ratio}  "
              f"{ref}{target}")  # fmt: skip
    print(
        "Mev/s and ratio from the median of the interleaved samples; ratio = reference time / "
        "our time (> 1: we are faster); best = the same ratio from each side's fastest sample"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
