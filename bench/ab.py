"""Run one benchmark against two checkouts, alternating, in one sitting.

    python bench/ab.py --a ../callgate-old --b . --runs 3 -- bench/intake.py --rows 50000

Each checkout needs its own virtual environment in ``.venv`` with callgate installed from
that checkout (``python3 -m venv .venv && .venv/bin/pip install -e .``): the benchmarks start
``callgate serve`` from the interpreter's own directory. Runs go A, B, A, B, ... so that a
machine whose load drifts during the sitting weighs on both alike. Prints each run's JSON
(the benchmark's last line) as it comes, then one JSON line: {"a": [...], "b": [...]}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def run(checkout: Path, bench: list[str]) -> dict[str, object]:
    python = checkout / ".venv" / "bin" / "python"
    out = subprocess.run([str(python), *bench], cwd=checkout, capture_output=True, text=True,
                         check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", type=Path, required=True, help="the first checkout (e.g. before)")
    ap.add_argument("--b", type=Path, required=True, help="the second checkout (e.g. after)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("bench", nargs=argparse.REMAINDER, help="-- the benchmark and its options")
    args = ap.parse_args()
    bench = args.bench[1:] if args.bench[:1] == ["--"] else args.bench
    if not bench:
        ap.error("name the benchmark after --")
    results: dict[str, list[dict[str, object]]] = {"a": [], "b": []}
    for i in range(args.runs):
        for side in ("a", "b"):
            r = run(getattr(args, side).resolve(), bench)
            results[side].append(r)
            print(json.dumps({"run": i + 1, "side": side, "result": r}), file=sys.stderr)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
