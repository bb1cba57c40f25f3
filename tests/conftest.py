"""Session-wide test configuration: offline hub, and the fixture modules of each layer."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytest_plugins = [
    "tests.fixtures.chain",
    "tests.fixtures.storage",
    "tests.fixtures.p2p",
    "tests.fixtures.training",
]
