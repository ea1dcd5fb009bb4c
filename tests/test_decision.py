"""The decision and stats records: schema, JSON round trip, validation, latency stamping."""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from spikecut.errors import ConfigError, SchemaError
from spikecut.pipeline.decision import (
    DECISION_SCHEMA,
    SCHEMA_VERSION,
    STATS_SCHEMA,
    Decision,
    Stats,
    StatsMeter,
    check_stream_id,
    make_stream_id,
    percentile,
)


def fields(**changes) -> dict:
    values = dict(
        stream="cam0",
        seq=7,
        label=3,
        label_name="three",
        gap=2.5,
        threshold=1.25,
        exit="cutoff",
        timesteps=4,
        max_timesteps=10,
        segment_start_us=1_000,
        segment_end_us=41_000,
        events=12_345,
        synops=6.5e6,
        model="nmnist-cnn@3f2a",
    )
    values.update(changes)
    return values


def decision(**changes) -> Decision:
    return Decision(**fields(**changes))


def test_json_round_trip_keeps_every_field_in_schema_order():
    original = decision(latency_ms=1.5)
    payload = original.to_json()
    record = json.loads(payload)
    assert list(record) == list(DECISION_SCHEMA["properties"])
    assert record["schema_version"] == SCHEMA_VERSION
    assert record["threshold"] == 1.25 and record["exit"] == "cutoff"
    assert Decision.from_json(payload) == original
    assert Decision.from_json(payload.encode()) == original
    assert "\n" not in payload


def test_forced_decision_has_null_threshold():
    forced = decision(exit="forced", threshold=None, timesteps=10)
    record = json.loads(forced.to_json())
    assert record["threshold"] is None and record["exit"] == "forced"
    assert Decision.from_json(forced.to_json()) == forced


def test_an_interrupted_decision_has_null_threshold():
    stopped = decision(exit="interrupted", threshold=None, timesteps=3)
    assert json.loads(stopped.to_json())["exit"] == "interrupted"
    assert Decision.from_json(stopped.to_json()) == stopped
    with pytest.raises(SchemaError, match="threshold"):
        decision(exit="interrupted")  # the cutoff did not fire: no threshold was crossed


def test_unchecked_decisions_equal_checked_ones():
    values = fields(decided_at="2025-05-01T12:00:00.000001+00:00", window_closed_ns=1_000_000)
    checked, unchecked = Decision(**values), Decision.unchecked(**values)
    assert unchecked == checked and unchecked.to_json() == checked.to_json()
    assert unchecked.window_closed_ns == 1_000_000
    stamped = unchecked.stamped(3_500_000)
    assert stamped == checked.stamped(3_500_000) and stamped.latency_ms == 2.5
    assert unchecked.latency_ms is None  # stamping makes a new decision
    assert Decision.from_json(stamped.to_json()) == stamped
    # the defaults are Decision's
    fresh = Decision.unchecked(**fields())
    assert fresh.schema_version == SCHEMA_VERSION and fresh.latency_ms is None
    assert datetime.fromisoformat(fresh.decided_at).utcoffset() == timedelta(0)
    with pytest.raises(TypeError, match="unknown field"):
        Decision.unchecked(**fields(colour="red"))
    with pytest.raises(TypeError, match=r"missing field\(s\) \['model'\]"):
        Decision.unchecked(**{k: v for k, v in fields().items() if k != "model"})


def test_schema_documents_every_field():
    assert DECISION_SCHEMA["required"] == list(DECISION_SCHEMA["properties"])
    assert DECISION_SCHEMA["additionalProperties"] is False
    serialised = {f.name for f in dataclasses.fields(Decision)} - {"window_closed_ns"}
    assert serialised == set(DECISION_SCHEMA["properties"])
    assert {f.name for f in dataclasses.fields(Stats)} == set(STATS_SCHEMA["properties"])
    for schema in (DECISION_SCHEMA, STATS_SCHEMA):
        json.dumps(schema)  # a plain JSON document
        for name, spec in schema["properties"].items():
            assert spec["description"], name


def test_decided_at_defaults_to_now_in_utc():
    moment = datetime.fromisoformat(decision().decided_at)
    assert moment.utcoffset() == timedelta(0)
    assert abs(datetime.now(timezone.utc) - moment) < timedelta(seconds=60)


def test_latency_is_stamped_from_the_window_close_once():
    closed_ns = time.monotonic_ns()
    fresh = decision(window_closed_ns=closed_ns)
    assert fresh.latency_ms is None
    stamped = fresh.stamped(closed_ns + 2_500_000)
    assert stamped.latency_ms == pytest.approx(2.5)
    assert stamped.stamped(closed_ns + 9_000_000) is stamped  # a second sink keeps it
    assert decision().stamped().latency_ms is None  # no close time: unknown, not invented
    assert "window_closed_ns" not in stamped.to_json()
    assert Decision.from_json(stamped.to_json()) == stamped  # close time is process-local


def test_numpy_scalars_become_plain_json_numbers():
    made = decision(
        seq=np.int64(2),
        label=np.int32(9),
        gap=np.float32(0.75),
        synops=np.float64(12.0),
        events=np.uint32(5),
    )
    record = json.loads(made.to_json())
    assert record["seq"] == 2 and record["label"] == 9 and record["gap"] == 0.75
    assert type(made.label) is int and type(made.gap) is float


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"stream": "a/b"}, "stream"),
        ({"stream": "a+b"}, "stream"),
        ({"stream": "#"}, "stream"),
        ({"stream": "$SYS"}, "stream"),
        ({"stream": ""}, "stream"),
        ({"stream": "cam0\n"}, "stream"),
        ({"seq": -1}, "seq"),
        ({"label": True}, "label"),
        ({"label": 2.0}, "label"),
        ({"gap": float("nan")}, "gap"),
        ({"gap": None}, "gap"),
        ({"exit": "timeout"}, "exit"),
        ({"timesteps": 0}, "timesteps"),
        ({"latency_ms": -1.0}, "latency_ms"),
        ({"decided_at": "yesterday"}, "decided_at"),
        ({"decided_at": "2025-01-01T00:00:00"}, "decided_at"),
        ({"model": 3}, "model"),
    ],
)
def test_invalid_fields_are_named(changes, field):
    with pytest.raises(SchemaError, match=repr(field)):
        decision(**changes)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"timesteps": 11}, "exceeds max_timesteps"),
        ({"segment_end_us": 0}, "before segment_start_us"),
        ({"exit": "forced"}, "threshold"),
        ({"threshold": None}, "threshold"),
    ],
)
def test_inconsistent_fields_are_rejected(changes, words):
    with pytest.raises(SchemaError, match=words):
        decision(**changes)


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda r: r.update(extra=1), "unknown field"),
        (lambda r: r.pop("model"), "missing field"),
        (lambda r: r.update(schema_version=SCHEMA_VERSION + 1), "schema_version"),
    ],
)
def test_from_json_rejects_other_schemas(mutate, words):
    record = json.loads(decision().to_json())
    mutate(record)
    with pytest.raises(SchemaError, match=words):
        Decision.from_json(json.dumps(record))


@pytest.mark.parametrize("payload", [b"{not json", "[1, 2]", "null", b"\xff\xfe"])
def test_from_json_rejects_non_objects(payload):
    with pytest.raises(SchemaError, match="decision"):
        Decision.from_json(payload)


@pytest.mark.parametrize("good", ["cam0", "user10_fluorescent", "a.b:c-d", "_", "9" * 128])
def test_valid_stream_ids(good):
    assert check_stream_id(good) == good


@pytest.mark.parametrize(
    "bad", ["", "a/b", "a+", "#", "$SYS", "a b", "-x", "é", "cam0\n", "9" * 129, None]
)
def test_invalid_stream_ids_name_the_value(bad):
    with pytest.raises(ConfigError, match="stream id"):
        check_stream_id(bad)


def test_make_stream_id_from_file_names():
    assert make_stream_id("/data/user10 fluorescent.aedat4") == "user10_fluorescent"
    assert make_stream_id("cam+1#a") == "cam_1_a"
    assert make_stream_id(".hidden") == "hidden"
    assert make_stream_id("///") == "_"


def test_percentile_matches_numpy():
    rng = np.random.default_rng(0)
    values = list(rng.exponential(3.0, size=101))
    for q in (0, 1, 50, 99, 100):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q))
    assert percentile([], 50) is None
    assert percentile([4.0], 99) == 4.0


def test_stats_meter_reports_interval_rates_and_cumulative_totals():
    now = [100.0]
    meter = StatsMeter("cam0", clock=lambda: now[0])
    meter.add_events(5_000)
    meter.add_windows(10)
    for latency in (1.0, 2.0, 3.0):
        meter.add_decision(decision(latency_ms=latency))
    meter.add_dropped(windows=2)
    now[0] = 102.0
    first = meter.snapshot()
    assert first.interval_s == 2.0 and first.events_per_s == 2_500.0
    assert (first.events, first.windows, first.decisions, first.dropped_windows) == (5000, 10, 3, 2)
    assert first.latency_ms_p50 == 2.0
    assert first.latency_ms_p99 == pytest.approx(2.98)
    now[0] = 103.0
    second = meter.snapshot()
    assert second.events_per_s == 0.0 and second.events == 5_000  # totals persist
    assert second.latency_ms_p50 is None and second.latency_ms_p99 is None
    assert Stats.from_json(second.to_json()) == second
    assert list(json.loads(second.to_json())) == list(STATS_SCHEMA["properties"])


def test_stats_reject_negative_counts():
    record = json.loads(StatsMeter("cam0").snapshot().to_json())
    record["dropped_events"] = -3
    with pytest.raises(SchemaError, match="dropped_events"):
        Stats.from_json(json.dumps(record))
