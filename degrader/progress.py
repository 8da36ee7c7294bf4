"""The one progress-callback shape of every long library call: `on_progress(step, total, logs)`.

Library code never prints; it calls this, and `cli/progress.py` draws it. A leaf module: nothing to import.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[int, int, dict[str, float]], None]  # on_progress(step, total, logs)
