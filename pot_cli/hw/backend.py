"""Which NVML backend a command uses: the real library, or a recording (``$POT_NVML_REPLAY``).

Kept apart from :mod:`pot_cli.hw.nvml` (the interface and the real backend) and
:mod:`pot_cli.hw.nvml_replay` (the recorded one) so that neither of those imports the other.
"""

from __future__ import annotations

import os
from pathlib import Path

from pot_cli.hw.nvml import REPLAY_ENV, NvmlBackend, PynvmlBackend
from pot_cli.hw.nvml_replay import ReplayBackend


def default_backend() -> NvmlBackend:
    """The real NVML, or the recording named by ``$POT_NVML_REPLAY`` (demos and tests)."""
    replay = os.environ.get(REPLAY_ENV)
    if replay:
        return ReplayBackend.from_file(Path(replay))
    return PynvmlBackend()
