"""From events to decisions: binning kernels, windowing stage, stepwise runner, sinks, CLI."""
