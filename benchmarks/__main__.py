"""python -m benchmarks <name>|all [--quick] [--out DIR]"""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
import time
import traceback
from pathlib import Path

from benchmarks import BENCHMARKS, _env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("name", choices=[*BENCHMARKS, "all"], help="which benchmark (or all, in a fixed order)")
    parser.add_argument("--quick", action="store_true", help="small samples, for the test suite (< 2 min for all)")
    parser.add_argument("--out", type=Path, default=None, help="where to write <name>.json/.png (default benchmarks/results)")
    parser.add_argument("--prefect-db", type=Path, default=None, metavar="FILE",
                        help="start from a copy of this migrated Prefect database (skips a fresh one's migration)")
    parser.add_argument("--prefect-api", default=None, metavar="URL",
                        help="a running Prefect API (e.g. Postgres-backed, http://127.0.0.1:4200/api) instead of "
                             "a temporary server on SQLite; startup still measures the default")
    parser.add_argument("--keep-temp", action="store_true", help="keep the session's temporary Prefect/Planflow homes")
    args = parser.parse_args(argv)

    # SIGTERM (a timeout, a CI cancel) unwinds like Ctrl-C, so servers stop and temp homes go.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    session = _env.prepare(args.prefect_db, args.prefect_api)  # before anything imports Prefect
    from benchmarks.common import DEFAULT_OUT, log

    out = (args.out or DEFAULT_OUT).resolve()
    names = list(BENCHMARKS) if args.name == "all" else [args.name]
    out.mkdir(parents=True, exist_ok=True)
    log(f"session dir {session}; writing to {out}")
    started, failed, timings = time.monotonic(), [], {}
    try:
        for name in names:
            t0 = time.monotonic()
            log(f"== {name}{' (quick)' if args.quick else ''}")
            try:
                importlib.import_module(f"benchmarks.{name}").run(out, args.quick)
            except Exception:  # one broken benchmark must not hide the others' figures
                traceback.print_exc()
                failed.append(name)
            timings[name] = round(time.monotonic() - t0, 1)
            log(f"== {name} done in {timings[name]} s")
    finally:
        if not args.keep_temp:
            _env.cleanup()
    total = round(time.monotonic() - started, 1)
    if args.name == "all":
        (out / "run_all.json").write_text(json.dumps({"quick": args.quick, "total_wall_s": total,
                                                      "wall_s": timings, "failed": failed}, indent=2) + "\n")
    log(f"finished in {total} s" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
