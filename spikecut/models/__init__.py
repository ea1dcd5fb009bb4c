"""Spiking networks: neurons, architectures, conversion, losses, RCS, cutoff rules, checkpoints."""
