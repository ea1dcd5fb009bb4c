import sys

from spikecut.pipeline.cli import main

sys.exit(main())
