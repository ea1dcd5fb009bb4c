"""The records the pipeline publishes: one `Decision` per classified segment, periodic `Stats`.

Both travel as one compact UTF-8 JSON object (a line on stdout and in JSON-lines files, a payload
on MQTT). `DECISION_SCHEMA` and `STATS_SCHEMA` are JSON Schema (draft 2020-12) documents and the
single source of truth for the wire format: `from_json` checks a payload against them, and every
field carries its meaning in `description`. `SCHEMA_VERSION` changes whenever a field is added,
removed or changes meaning; readers reject versions they do not know.

Decision fields, in wire order:

    schema_version    int          SCHEMA_VERSION
    stream            str          stream id (see `check_stream_id`): one MQTT topic level
    seq               int >= 0     per-stream sequence number; (stream, seq) identifies a decision
    label             int >= 0     predicted class index
    label_name        str          predicted class name
    gap               number       Top-1 minus Top-2 of the accumulated output at the deciding step
    threshold         number|null  calibrated threshold beta[t] the gap exceeded; null unless
                                   exit is "cutoff"
    exit              str          "cutoff" (the gap exceeded the threshold), "forced" (it never
                                   did: decided at T, or at the last step of a segment its stream
                                   ended) or "interrupted" (the process was stopped mid-segment:
                                   decided at its last step with the windows it had)
    timesteps         int >= 1     timesteps used (one window each)
    max_timesteps     int >= 1     T
    segment_start_us  int          sensor time of the segment's first window start (µs)
    segment_end_us    int          sensor time of the deciding window's end (µs)
    decided_at        str          UTC wall-clock time the decision was made, ISO-8601
    latency_ms        number|null  close of the deciding window -> handover to the sink (below)
    events            int >= 0     events consumed by the segment up to the decision
    synops            number >= 0  estimated synaptic operations spent on the segment
    model             str          model id (checkpoint name and hash, as the runner chooses)

Latency. The runner builds the decision with `window_closed_ns`, the `time.monotonic_ns()` at
which the windowing stage closed the deciding window (process-local, never serialised). The sink
stamps `latency_ms` when the decision is handed to it (`Sink.publish`), once, the same value for
every sink of a fan-out; `publish` returns the stamped decision so the runner can keep statistics.
The number therefore measures the pipeline: binning, SNN steps, cutoff and hand-over. stdout and
JSON-lines sinks write inside `publish`, so for them it is the publication time. MQTT puts the
decision in its outbox inside `publish` and sends it at once when connected; time spent waiting
in the outbox during a broker outage is not in `latency_ms`: it shows as the distance between
`decided_at` and arrival, and in the MQTT sink's `counters.outbox_wait_ms_p50/p99` (publish to
PUBACK). A decision without `window_closed_ns` (e.g. re-read from JSON) keeps its latency.

Validation. `Decision(...)`, `from_dict` and `from_json` check every field against the schema.
The runner builds its decisions with `Decision.unchecked(...)` instead: their values are its own
plain Python numbers, and the check costs tens of microseconds on every segment, a fixed cost
that eats into the wall-clock saving of an early exit (a small network's step is ~0.3 ms). Tests
check that what the runner publishes passes `from_json`.

Versions: 1 had exits "cutoff" and "forced" only; 2 adds "interrupted".
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, NoReturn

from spikecut.errors import ConfigError, SchemaError

SCHEMA_VERSION = 2

EXITS = ("cutoff", "forced", "interrupted")

_STREAM_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$"
_STREAM_ID = re.compile(_STREAM_PATTERN.strip("^$"))
_NOT_STREAM_CHAR = re.compile(r"[^A-Za-z0-9_.:-]+")


def check_stream_id(stream: str) -> str:
    """Return `stream` if it is safe as one MQTT topic level, else raise `ConfigError`.

    Allowed: 1-128 characters from letters, digits, `_ . : -`, not starting with `. : -`. That
    excludes the MQTT wildcards `+` and `#`, the level separator `/`, `$` (broker-reserved topics)
    and anything a shell or a dashboard would mangle.
    """
    if not isinstance(stream, str) or not _STREAM_ID.fullmatch(stream):
        raise ConfigError(
            f"stream id {stream!r} is invalid: use 1-128 characters from letters, digits and "
            "'_.:-', starting with a letter, digit or '_' (no '/', '+', '#', '$' or spaces)"
        )
    return stream


def make_stream_id(name: str) -> str:
    """A valid stream id derived from free text such as a file name (`"a b/c.aedat4"` -> `a_b_c`).

    Only the disallowed characters change; the suffix after the last dot is dropped when `name`
    looks like a file name.
    """
    stem = name.rsplit("/", 1)[-1]
    if "." in stem[1:]:
        stem = stem[: stem.rindex(".")]
    slug = _NOT_STREAM_CHAR.sub("_", stem).lstrip(".:-")[:128]
    return check_stream_id(slug or "_")


def utc_now_iso() -> str:
    """The current UTC time, ISO-8601 with microseconds: `2025-05-01T12:00:00.000001+00:00`."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _number(description: str, *, nullable: bool = False, minimum: float | None = None) -> dict:
    spec: dict[str, Any] = {"type": ["number", "null"] if nullable else "number"}
    if minimum is not None:
        spec["minimum"] = minimum
    spec["description"] = description
    return spec


def _integer(description: str, *, minimum: int | None = None) -> dict:
    spec: dict[str, Any] = {"type": "integer"}
    if minimum is not None:
        spec["minimum"] = minimum
    spec["description"] = description
    return spec


def _string(description: str, **extra: Any) -> dict:
    return {"type": "string", **extra, "description": description}


def _object_schema(name: str, title: str, properties: dict[str, dict]) -> dict:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://spikecut.invalid/schema/{name}/{SCHEMA_VERSION}",
        "title": title,
        "type": "object",
        "additionalProperties": False,
        "required": list(properties),
        "properties": properties,
    }


_COMMON = {
    "schema_version": {"const": SCHEMA_VERSION, "description": "Version of this schema."},
    "stream": _string("Stream id, safe as one MQTT topic level.", pattern=_STREAM_PATTERN),
}

DECISION_SCHEMA: dict = _object_schema(
    "decision",
    "spikecut decision: one classification of one segment of one stream",
    {
        **_COMMON,
        "seq": _integer("Per-stream sequence number from 0; (stream, seq) is unique.", minimum=0),
        "label": _integer("Predicted class index.", minimum=0),
        "label_name": _string("Predicted class name."),
        "gap": _number("Top-1 minus Top-2 of the accumulated output at the deciding timestep."),
        "threshold": _number(
            "Calibrated threshold the gap exceeded at that timestep; null unless exit is 'cutoff'.",
            nullable=True,
        ),
        "exit": {
            "enum": list(EXITS),
            "description": "'cutoff': the gap exceeded the threshold; 'forced': it never did and "
            "the decision was taken at T (or at the last timestep of a segment its stream ended); "
            "'interrupted': the process was stopped mid-segment and decided at its last timestep.",
        },
        "timesteps": _integer("Timesteps (windows) the network ran for this decision.", minimum=1),
        "max_timesteps": _integer("T, the timestep budget of a segment.", minimum=1),
        "segment_start_us": _integer("Sensor time of the segment's first window start (µs)."),
        "segment_end_us": _integer("Sensor time of the deciding window's end (µs)."),
        "decided_at": _string("UTC wall-clock time of the decision, ISO-8601.", format="date-time"),
        "latency_ms": _number(
            "Milliseconds from the close of the deciding window to the hand-over to the sink; "
            "null when unknown.",
            nullable=True,
            minimum=0,
        ),
        "events": _integer("Events the segment consumed up to the decision.", minimum=0),
        "synops": _number("Estimated synaptic operations spent on the segment.", minimum=0),
        "model": _string("Model id."),
    },
)

STATS_SCHEMA: dict = _object_schema(
    "stats",
    "spikecut stats: periodic health of one stream",
    {
        **_COMMON,
        "at": _string("UTC wall-clock time of this report, ISO-8601.", format="date-time"),
        "interval_s": _number("Seconds covered by the rates and percentiles below.", minimum=0),
        "events_per_s": _number("Events received per second over the interval.", minimum=0),
        "events": _integer("Events received since the stream started.", minimum=0),
        "windows": _integer("Windows processed since the stream started.", minimum=0),
        "decisions": _integer("Decisions made since the stream started.", minimum=0),
        "dropped_events": _integer("Events lost since the stream started.", minimum=0),
        "dropped_windows": _integer("Windows skipped since the stream started.", minimum=0),
        "dropped_decisions": _integer(
            "Decisions a sink dropped (full outbox) since the stream started.", minimum=0
        ),
        "latency_ms_p50": _number(
            "Median decision latency over the interval; null without decisions.",
            nullable=True,
            minimum=0,
        ),
        "latency_ms_p99": _number(
            "99th-percentile decision latency over the interval; null without decisions.",
            nullable=True,
            minimum=0,
        ),
    },
)

_JSON_TYPES = {
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: (
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ),
    "string": lambda v: isinstance(v, str),
    "null": lambda v: v is None,
}


def validate(record: Mapping[str, Any], schema: dict) -> None:
    """Check `record` against `schema` (the subset of JSON Schema our two schemas use).

    Raises `SchemaError` naming the first offending field and value.
    """
    title = schema["title"].split(":")[0]
    if not isinstance(record, Mapping):
        raise SchemaError(f"{title}: expected a JSON object, got {type(record).__name__}")
    properties = schema["properties"]
    unknown = [key for key in record if key not in properties]
    if unknown:
        raise SchemaError(f"{title}: unknown field(s) {', '.join(map(repr, unknown))}")
    missing = [key for key in schema["required"] if key not in record]
    if missing:
        raise SchemaError(f"{title}: missing field(s) {', '.join(map(repr, missing))}")
    for key, spec in properties.items():
        value = record[key]
        if "const" in spec and value != spec["const"]:
            _reject(title, key, f"be {spec['const']!r}", value)
        if "enum" in spec and value not in spec["enum"]:
            _reject(title, key, f"be one of {spec['enum']}", value)
        if "type" in spec:
            types = [spec["type"]] if isinstance(spec["type"], str) else spec["type"]
            if not any(_JSON_TYPES[t](value) for t in types):
                _reject(title, key, "be " + " or ".join(types), value)
        if value is None:
            continue
        if "minimum" in spec and value < spec["minimum"]:
            _reject(title, key, f"be >= {spec['minimum']}", value)
        # Our patterns are anchored ^...$; fullmatch, because Python's $ accepts a final "\n".
        if "pattern" in spec and not re.fullmatch(spec["pattern"].strip("^$"), value):
            _reject(title, key, f"match {spec['pattern']!r}", value)
        if spec.get("format") == "date-time":
            _check_utc_iso(title, key, value)


def _reject(title: str, key: str, must: str, value: object) -> NoReturn:
    raise SchemaError(f"{title}: field {key!r} must {must}, got {value!r}")


def _check_utc_iso(title: str, key: str, value: str) -> None:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        _reject(title, key, "be an ISO-8601 date-time", value)
    if moment.utcoffset() is None:
        _reject(title, key, "carry a UTC offset", value)


def _plain_scalars(record: object, schema: dict) -> None:
    """Turn numpy scalars of a frozen record into Python ones, for `json` and `validate`."""
    for key in schema["properties"]:
        value = getattr(record, key)
        if isinstance(value, (bool, int, float)) or not isinstance(value, numbers.Real):
            continue
        plain = int(value) if isinstance(value, numbers.Integral) else float(value)
        object.__setattr__(record, key, plain)


def _loads(payload: str | bytes, title: str) -> Any:
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SchemaError(f"{title}: payload is not JSON ({exc}): {payload[:80]!r}") from None


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _dumps(record: dict) -> str:
    return _ENCODER.encode(record)


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """One classification of one segment of one stream; see the module docstring for fields."""

    stream: str
    seq: int
    label: int
    label_name: str
    gap: float
    threshold: float | None
    exit: Literal["cutoff", "forced", "interrupted"]
    timesteps: int
    max_timesteps: int
    segment_start_us: int
    segment_end_us: int
    events: int
    synops: float
    model: str
    decided_at: str = field(default_factory=utc_now_iso)
    latency_ms: float | None = None
    schema_version: int = SCHEMA_VERSION
    # time.monotonic_ns() when the deciding window closed; local to this process, not serialised.
    window_closed_ns: int | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        _plain_scalars(self, DECISION_SCHEMA)
        validate(self.to_dict(), DECISION_SCHEMA)
        if self.timesteps > self.max_timesteps:
            raise SchemaError(
                f"decision: timesteps {self.timesteps} exceeds max_timesteps {self.max_timesteps}"
            )
        if self.segment_end_us < self.segment_start_us:
            raise SchemaError(
                f"decision: segment_end_us {self.segment_end_us} is before "
                f"segment_start_us {self.segment_start_us}"
            )
        if (self.exit == "cutoff") != (self.threshold is not None):
            raise SchemaError(
                f"decision: exit {self.exit!r} with threshold {self.threshold!r} (a threshold "
                "is given exactly when the cutoff fired)"
            )

    @classmethod
    def unchecked(cls, **fields: Any) -> Decision:
        """A decision built without the schema check, for values computed in this process (the
        runner's own ints, floats and strings; see "Validation" above). Defaults as `Decision`."""
        unknown = fields.keys() - _DECISION_FIELDS
        missing = _DECISION_REQUIRED - fields.keys()
        if unknown or missing:
            problems = [f"unknown field(s) {sorted(unknown)}"] if unknown else []
            problems += [f"missing field(s) {sorted(missing)}"] if missing else []
            raise TypeError(f"Decision.unchecked: {', '.join(problems)}")
        if "decided_at" not in fields:
            fields["decided_at"] = utc_now_iso()
        return cls._filled({**_DECISION_DEFAULTS, **fields})

    @classmethod
    def _filled(cls, values: Mapping[str, Any]) -> Decision:
        decision = object.__new__(cls)
        for name in _DECISION_FIELDS:
            object.__setattr__(decision, name, values[name])
        return decision

    def to_dict(self) -> dict[str, Any]:
        """The wire record, keys in schema order."""
        return {key: getattr(self, key) for key in DECISION_SCHEMA["properties"]}

    def to_json(self) -> str:
        return _dumps(self.to_dict())

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Decision:
        validate(record, DECISION_SCHEMA)
        return cls(**record)

    @classmethod
    def from_json(cls, payload: str | bytes) -> Decision:
        return cls.from_dict(_loads(payload, "decision"))

    def stamped(self, now_ns: int | None = None) -> Decision:
        """This decision with `latency_ms` measured up to `now_ns` (default: now).

        Unchanged when it already has a latency or has no `window_closed_ns`.
        """
        if self.latency_ms is not None or self.window_closed_ns is None:
            return self
        now_ns = time.monotonic_ns() if now_ns is None else now_ns
        values = {name: getattr(self, name) for name in _DECISION_FIELDS}
        values["latency_ms"] = max(0, now_ns - self.window_closed_ns) / 1e6
        return self._filled(values)  # checked already (or unchecked); a latency >= 0 keeps it so


_DECISION_FIELDS = tuple(f.name for f in dataclasses.fields(Decision))
#: Defaults of `Decision.unchecked` (decided_at, a factory, is filled in there).
_DECISION_DEFAULTS = {
    f.name: f.default for f in dataclasses.fields(Decision) if f.default is not dataclasses.MISSING
}
_DECISION_REQUIRED = set(_DECISION_FIELDS) - _DECISION_DEFAULTS.keys() - {"decided_at"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Stats:
    """Periodic health of one stream (`STATS_SCHEMA`); totals are cumulative, rates per interval."""

    stream: str
    at: str
    interval_s: float
    events_per_s: float
    events: int
    windows: int
    decisions: int
    dropped_events: int
    dropped_windows: int
    dropped_decisions: int
    latency_ms_p50: float | None
    latency_ms_p99: float | None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        _plain_scalars(self, STATS_SCHEMA)
        validate(self.to_dict(), STATS_SCHEMA)

    def to_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in STATS_SCHEMA["properties"]}

    def to_json(self) -> str:
        return _dumps(self.to_dict())

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Stats:
        validate(record, STATS_SCHEMA)
        return cls(**record)

    @classmethod
    def from_json(cls, payload: str | bytes) -> Stats:
        return cls.from_dict(_loads(payload, "stats"))


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation, as numpy's default; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class StatsMeter:
    """Counts one stream's traffic and turns it into a `Stats` record on demand.

    The runner calls `add_*` as work happens and `snapshot()` once per stats period; rates and
    latency percentiles cover the time since the previous snapshot, totals the whole stream.
    """

    def __init__(self, stream: str, *, clock=time.monotonic) -> None:
        self.stream = check_stream_id(stream)
        self._clock = clock
        self._since = clock()
        self._interval_events = 0
        self._latencies_ms: list[float] = []
        self.events = 0
        self.windows = 0
        self.decisions = 0
        self.dropped_events = 0
        self.dropped_windows = 0
        self.dropped_decisions = 0

    def add_events(self, count: int) -> None:
        self.events += count
        self._interval_events += count

    def add_windows(self, count: int = 1) -> None:
        self.windows += count

    def add_decision(self, decision: Decision) -> None:
        """Count a published decision (the one `Sink.publish` returned, so it has its latency)."""
        self.decisions += 1
        if decision.latency_ms is not None:
            self._latencies_ms.append(decision.latency_ms)

    def add_dropped(self, *, events: int = 0, windows: int = 0, decisions: int = 0) -> None:
        """Count losses; for decisions a sink dropped, see its `counters.dropped_by_stream`."""
        self.dropped_events += events
        self.dropped_windows += windows
        self.dropped_decisions += decisions

    def snapshot(self) -> Stats:
        """A `Stats` for the interval since the last snapshot, and start a new interval."""
        now = self._clock()
        interval_s = max(0.0, now - self._since)
        latencies = self._latencies_ms
        stats = Stats(
            stream=self.stream,
            at=utc_now_iso(),
            interval_s=interval_s,
            events_per_s=self._interval_events / interval_s if interval_s > 0 else 0.0,
            events=self.events,
            windows=self.windows,
            decisions=self.decisions,
            dropped_events=self.dropped_events,
            dropped_windows=self.dropped_windows,
            dropped_decisions=self.dropped_decisions,
            latency_ms_p50=percentile(latencies, 50),
            latency_ms_p99=percentile(latencies, 99),
        )
        self._since = now
        self._interval_events = 0
        self._latencies_ms = []
        return stats
