"""spikecut: event-camera streams in, early spiking-network decisions out.

Importing the package stays cheap (no torch, no numba compilation); subpackages load what they need.
"""

__version__ = "0.1.0"
