"""`spikecut view`: render a recording as the windows a network would see.

A grid of panels (.png, .jpg, .pdf, .svg) or an animation (.gif), one window per panel or frame,
ON events in one colour and OFF events in another, each panel stamped with its time span relative
to the first event. The frames come from the same binning code as training and streaming, so what
you see is what the network sees (before dtype conversion and clipping).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from spikecut.errors import ConfigError
from spikecut.pipeline.binning import BinnedRecording, WindowSpec, bin_recording
from spikecut.sources.events import StreamInfo

GRID_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")
ANIMATION_SUFFIXES = (".gif",)
ON_RGB = np.array([0.89, 0.29, 0.20])  # warm red for ON
OFF_RGB = np.array([0.16, 0.46, 0.85])  # blue for OFF
MAX_PANELS = 400


def preview_windows(
    events: np.ndarray,
    info: StreamInfo,
    *,
    panels: int = 16,
    window_us: int | None = None,
    downsample: int = 1,
) -> BinnedRecording:
    """The windows to show: `panels` equal bins over the recording, or the first `panels`
    windows of `window_us` from its first event."""
    if isinstance(panels, bool) or not isinstance(panels, int) or not 1 <= panels <= MAX_PANELS:
        raise ConfigError(f"panels must be an integer in 1..{MAX_PANELS}, got {panels!r}")
    if window_us is None:
        spec = WindowSpec(n_bins=panels, dtype="int32", downsample=downsample)
        return bin_recording(events, info, spec)
    spec = WindowSpec(window_us=window_us, dtype="int32", downsample=downsample)
    if events.size:  # only what the panels need: the first panels * window_us of the stream
        end = int(events["t"][0]) + panels * window_us
        events = events[: int(np.searchsorted(events["t"], end, side="left"))]
    binned = bin_recording(events, info, spec)
    return BinnedRecording(
        frames=binned.frames[:panels],
        t_start_us=binned.t_start_us[:panels],
        t_end_us=binned.t_end_us[:panels],
        n_events=binned.n_events[:panels],
        partial=binned.partial[:panels],
        drops=binned.drops,
    )


def to_rgb(frame: np.ndarray, scale: float) -> np.ndarray:
    """[2, H, W] counts -> [H, W, 3] floats on white: ON red, OFF blue, mixed where both fire."""
    off = np.clip(frame[0] / scale, 0.0, 1.0)[..., None]
    on = np.clip(frame[1] / scale, 0.0, 1.0)[..., None]
    ink = 1.0 - on * (1.0 - ON_RGB) - off * (1.0 - OFF_RGB)
    return np.clip(ink, 0.0, 1.0)


def _scale(frames: np.ndarray) -> float:
    """One colour scale for all panels: the 99th percentile of non-zero counts (at least 1)."""
    nonzero = frames[frames > 0]
    return float(max(1.0, np.percentile(nonzero, 99))) if nonzero.size else 1.0


def _label(binned: BinnedRecording, k: int, t0: int) -> str:
    start = (int(binned.t_start_us[k]) - t0) / 1e3
    end = (int(binned.t_end_us[k]) - t0) / 1e3
    return f"{start:.1f}–{end:.1f} ms · {int(binned.n_events[k]):,} ev"


def check_output(out: Path) -> str:
    """The output's suffix, if it is one we can write."""
    suffix = out.suffix.lower()
    if suffix not in GRID_SUFFIXES + ANIMATION_SUFFIXES:
        raise ConfigError(
            f"--out {str(out)!r}: use one of {', '.join(GRID_SUFFIXES + ANIMATION_SUFFIXES)}"
        )
    return suffix


def render(
    binned: BinnedRecording,
    out: Path,
    *,
    title: str,
    cols: int | None = None,
    fps: float = 5.0,
) -> None:
    """Write a grid (by extension .png/.jpg/.pdf/.svg) or an animated .gif of the windows."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    suffix = check_output(out)
    frames = binned.frames
    if frames.shape[0] == 0 or not binned.n_events.any():
        raise ConfigError("nothing to show: no events inside the sensor in these windows")
    if frames.shape[1] != 2:
        raise ConfigError("view needs two polarity channels")
    scale = _scale(frames)
    t0 = int(binned.t_start_us[0])
    height, width = frames.shape[2:]
    if suffix in ANIMATION_SUFFIXES:
        _render_gif(binned, out, title=title, scale=scale, t0=t0, fps=fps)
        return
    n = frames.shape[0]
    cols = cols or math.ceil(math.sqrt(n * height / width))
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    panel_w = 2.6
    panel_h = panel_w * height / width + 0.35
    fig = Figure(figsize=(cols * panel_w, rows * panel_h + 0.5), layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(title, fontsize=9)
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.set_axis_off()
            continue
        ax.imshow(to_rgb(frames[k], scale), interpolation="nearest")
        ax.set_title(_label(binned, k, t0), fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():  # a thin frame shows where the sensor ends
            spine.set_color("0.75")
    fig.savefig(out, dpi=120)


def _render_gif(
    binned: BinnedRecording, out: Path, *, title: str, scale: float, t0: int, fps: float
) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    height, width = binned.frames.shape[2:]
    fig_w, strip = 4.0, 0.45  # inches; the strip above the image holds the time stamp
    fig_h = fig_w * height / width + strip
    fig = Figure(figsize=(fig_w, fig_h))
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0 - strip / fig_h))
    ax.set_axis_off()
    image = ax.imshow(to_rgb(binned.frames[0], scale), interpolation="nearest")
    text = fig.text(0.5, 1.0 - 0.04 / fig_h, "", ha="center", va="top", fontsize=7)
    pictures = []
    for k in range(binned.frames.shape[0]):
        image.set_data(to_rgb(binned.frames[k], scale))
        text.set_text(f"{title}\n{_label(binned, k, t0)}")
        canvas.draw()
        rgba = np.asarray(canvas.buffer_rgba())
        pictures.append(Image.fromarray(rgba[..., :3].copy()))
    pictures[0].save(
        out,
        save_all=True,
        append_images=pictures[1:],
        duration=max(20, int(1000 / fps)),
        loop=0,
    )


def view_command(args: argparse.Namespace) -> int:
    from spikecut.sources import read_events

    out = Path(args.out)
    check_output(out)
    events, info = read_events(
        args.path, lenient=args.lenient, sensor_size=args.sensor_size, format=args.format
    )
    binned = preview_windows(
        events, info, panels=args.panels, window_us=args.window_us, downsample=args.downsample
    )
    window_text = (
        f"{args.window_us / 1e3:g} ms windows"
        if args.window_us
        else f"{len(binned.frames)} equal windows"
    )
    title = f"{Path(args.path).name}  {info.width}x{info.height}  {window_text}"
    render(binned, out, title=title, cols=args.cols, fps=args.fps)
    shown = int(binned.n_events.sum())
    print(f"{out}: {len(binned.frames)} windows, {shown:,} of {len(events):,} events shown")
    return 0
