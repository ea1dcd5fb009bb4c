"""Run the fuzz tests again with Numba's bounds checking switched on: a decoder or binning kernel
that read or wrote outside its buffers would then raise IndexError, which the tests refuse."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(500)
def test_fuzz_with_numba_boundscheck(tmp_path, real_data):
    env = {
        **os.environ,
        "NUMBA_BOUNDSCHECK": "1",
        # A private cache: kernels compiled with bounds checks must not replace the fast ones.
        "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
         "tests/test_fuzz_readers.py", "tests/test_readers_bad_input.py",
         "tests/test_aedat4_decoder.py", "tests/test_lz4.py", "tests/test_binning_paths.py"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=480,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
