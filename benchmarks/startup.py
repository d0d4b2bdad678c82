"""How fast the commands answer: wall time of `--help` in a fresh process, and what it imports.

    python benchmarks/startup.py                    # every command's --help, 5 fresh processes each
    python benchmarks/startup.py --repeats 10 --json startup.json

Per command: the median and slowest wall time of `python -m MODULE --help` (a fresh interpreter each time, so
nothing is cached in the process; the operating system's file cache is warm after the first), the modules the
process imported, the heavy ones among them (torch, transformers, lark, triton: each costs seconds), and the
slowest imports by `python -X importtime` (cumulative microseconds). `python -c pass` is measured beside them: the
interpreter's own start, the floor no command can go below. The promise is `--help` under 2 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from bwsk.atomic import write_atomic

COMMANDS = {  # the name users type: the module that runs it, its arguments
    "python -c pass": ("", []),
    "bwsk-train --help": ("bwsk.cli.train", ["--help"]),
    "bwsk-train experiment --help": ("bwsk.cli.train", ["experiment", "--help"]),
    "bwsk-compile --help": ("bwsk.cli.compile", ["--help"]),
    "bwsk-demo --help": ("bwsk.cli.demo", ["--help"]),
}
HEAVY = ("torch", "transformers", "lark", "triton")
PROMISE_SECONDS = 2.0


def argv_of(module: str, args: list[str]) -> list[str]:
    return [sys.executable, "-c", "pass"] if not module else [sys.executable, "-m", module, *args]


def wall_seconds(argv: list[str]) -> float:
    """One fresh process's wall time; it must succeed."""
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[1:])}: exit {done.returncode}: {done.stderr.strip()[-300:]}")
    return seconds


def imports(argv: list[str], top: int) -> tuple[list[str], list[tuple[str, int]]]:
    """(every top-level package the process imported, the `top` slowest imports by cumulative microseconds)."""
    done = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], capture_output=True, text=True, timeout=300)
    timed = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line or "cumulative" in line:
            continue
        _, cumulative, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
        timed.append((name, int(cumulative)))
    packages = sorted({name.strip().split(".")[0] for name, _ in timed})
    return packages, sorted(timed, key=lambda item: -item[1])[:top]


def measure(name: str, repeats: int, top: int) -> dict:
    module, args = COMMANDS[name]
    argv = argv_of(module, args)
    wall_seconds(argv)  # warm the file cache
    times = [wall_seconds(argv) for _ in range(repeats)]
    packages, slowest = imports(argv, top)
    return {
        "command": name,
        "median_s": statistics.median(times),
        "max_s": max(times),
        "packages": len(packages),
        "heavy": [p for p in HEAVY if p in packages],
        "slowest_imports": [{"module": m.strip(), "cumulative_us": us} for m, us in slowest],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/startup.py", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed fresh processes per command (default 5)")
    parser.add_argument("--top", type=int, default=3, help="slowest imports listed per command (default 3)")
    parser.add_argument("--json", metavar="OUT", help="write the rows as JSON (an existing file only with --force)")
    parser.add_argument("--force", action="store_true", help="replace an existing --json file")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.top < 0:
        parser.error("--repeats must be at least 1 and --top at least 0")
    if args.json and os.path.lexists(args.json) and not args.force:
        parser.error(f"{args.json}: already exists (pass --force to replace it)")
    rows = []
    for name in COMMANDS:
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        rows.append(measure(name, args.repeats, args.top))
    floor = rows[0]["median_s"]
    print("| command | median s | max s | above python's start | packages imported | heavy | slowest imports (cumulative ms) |")
    print("|---|---:|---:|---:|---:|---|---|")
    for row in rows:
        slowest = ", ".join(f"{item['module']} {item['cumulative_us'] / 1000:.0f}" for item in row["slowest_imports"])
        print(
            f"| {row['command']} | {row['median_s']:.2f} | {row['max_s']:.2f} | {row['median_s'] - floor:.2f} | {row['packages']} | "
            f"{', '.join(row['heavy']) or 'none'} | {slowest} |"
        )
    over = [row["command"] for row in rows if row["median_s"] > PROMISE_SECONDS]
    print(
        f"promise: --help under {PROMISE_SECONDS:.0f} s; " + (f"over it here: {', '.join(over)}" if over else "every command meets it here")
    )
    if args.json:
        write_atomic(args.json, json.dumps({"python": sys.version.split()[0], "rows": rows}, indent=2) + "\n", force=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
