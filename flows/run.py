"""`python flows/run.py "goal"`: Planflow's command line as a script (the same as `planflow`).

The commands live in `flows/cli/`; this file only makes the project importable
when run by path and hands over.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable, not flows/
    _root = str(Path(__file__).resolve().parents[1])
    sys.path[:] = [_root] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

from flows.cli import main  # noqa: E402

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
