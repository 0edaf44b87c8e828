"""Not collected by the suite (no test_ prefix): test_interrupted_session.py runs it in a pytest of
its own and interrupts that pytest while a streamer is running against the session's servers."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from tests.integration.conftest import Site


def test_streams_until_interrupted(site: Site) -> None:
    site.set_checkpoint()
    site.streamer()
    site.insert_post("in flight when interrupted")
    Path(os.environ["WPCDC_PROBE_READY"]).write_text("ready")
    threading.Event().wait(600)  # until the outer test interrupts this pytest
