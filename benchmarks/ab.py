"""A/B timing: two or more shell commands run in alternation, median wall time and CPU time.

    .venv/bin/python benchmarks/ab.py --rounds 8 --clean /tmp/out \\
        "before=cd ../old && $PWD/.venv/bin/python -m asyncsync prepare $IN -o /tmp/out --json" \\
        "after=.venv/bin/python -m asyncsync prepare $IN -o /tmp/out --json"

Each ``NAME=COMMAND`` runs once per round, in an order that reverses every round (so that
neither side always runs on a machine the other just warmed or tired), through the shell,
with its output discarded. For each run the wall time and the machine's busy CPU time (all
processes: ``/proc/stat``, so the pool workers and any server the command talks to count; the
machine should be otherwise idle) are taken; the medians and every wall time are printed.
``--clean DIR`` removes DIR before each run (an output directory).

To compare two versions of the code, run each from its own checkout's directory (``cd``):
``python -m asyncsync`` imports the package from the current directory first, before
``PYTHONPATH`` and the installed one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import time


def busy_cpu_s() -> float:
    """CPU seconds the machine has spent on anything but idling and waiting, since boot."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle, iowait = fields[3], fields[4]
    return (sum(fields) - idle - iowait) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("commands", nargs="+", metavar="NAME=COMMAND")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--clean", default=None, help="a directory removed before each run")
    args = parser.parse_args()
    named = [tuple(c.split("=", 1)) for c in args.commands]
    if any(len(c) != 2 for c in named):
        parser.error("each command is NAME=COMMAND")
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in named}
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    for r in range(args.rounds):
        for name, command in named if r % 2 == 0 else named[::-1]:
            if args.clean:
                shutil.rmtree(args.clean, ignore_errors=True)
            cpu0, t0 = busy_cpu_s(), time.perf_counter()
            subprocess.run(command, shell=True, check=True, stdout=subprocess.DEVNULL)
            runs[name].append((time.perf_counter() - t0, busy_cpu_s() - cpu0))
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    for name, got in runs.items():
        wall = statistics.median(w for w, _ in got)
        cpu = statistics.median(c for _, c in got)
        every = ", ".join(f"{w:.2f}" for w, _ in got)
        print(f"{name}: median wall {wall:.2f} s, median CPU {cpu:.2f} s (wall: {every})")


if __name__ == "__main__":
    main()
