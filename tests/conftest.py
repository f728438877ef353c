"""Shared test setup: the repo root on sys.path (workers are imported as ``workers.stt.handler``)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEST_HANDLERS = REPO / "tests" / "handlers"

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
