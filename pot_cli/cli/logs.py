"""Log lines for the long-running commands (pot validate, pot mine, pot devnet's nodes)."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str) -> None:
    """One readable line per record on stderr: time, logger, message."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    # one line per peer request would drown the node's own lines
    for noisy in ("httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
