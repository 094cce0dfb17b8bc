"""Benchmark: the local `asyncsync prepare` against `asyncsync.dask.prepare` on a LocalCluster.

    .venv/bin/pip install -e '.[bench,dask]'
    .venv/bin/python benchmarks/bench_dask.py --rows 10000000 --files 8

Generates ``benchmarks/data/dask-ROWSxFILES/in-K.txt`` with ``asyncsync sample`` (kept for later
runs; seeds differ per file, so files share some IDs and every file has duplicates and invalid
lines), then, one after the other on the same machine:

* local: ``asyncsync prepare FILE... -o DIR --json`` in its own process (a pool of one process per
  core), measured as ``run.py`` measures: wall time, CPU and peak RSS of the process tree;
* dask: a ``LocalCluster`` of ``--workers`` worker processes with one thread each (its start is
  timed apart; ``--p2p-buffer`` sets the workers' P2P shuffle send buffer), then
  ``asyncsync.dask.prepare(files, ...)`` timed from the call to the written manifest. The peak
  RSS of each worker process is sampled every 50 ms with psutil, as is the RSS of this process
  (the client, with the scheduler in it).

Checks that both wrote the same parts (names, rows, bytes, MD5s) and prints the figures with the
machine's load average before and after; ``--json-out`` writes them to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from run import measure

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
WORK = HERE / "work"
POLL_S = 0.05


def make_inputs(rows: int, files: int) -> list[Path]:
    folder = DATA / f"dask-{rows}x{files}"
    folder.mkdir(parents=True, exist_ok=True)
    per_file = [rows // files + (1 if i < rows % files else 0) for i in range(files)]
    paths = []
    for i, n in enumerate(per_file):
        path = folder / f"in-{i}.txt"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "asyncsync",
                    "sample",
                    "-n",
                    str(n),
                    "-o",
                    str(tmp),
                    "--seed",
                    str(i),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            tmp.rename(path)
        paths.append(path)
    return paths


class PeakRss:
    """Samples the RSS of some processes every ``POLL_S`` seconds on a thread; keeps the peaks."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak = dict.fromkeys(pids, 0)
        self.cpu_start = {name: sum(p.cpu_times()[:2]) for name, p in self.procs.items()}
        self.cpu: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, proc in self.procs.items():
                try:
                    self.peak[name] = max(self.peak[name], proc.memory_info().rss)
                except psutil.Error:
                    pass
            time.sleep(POLL_S)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for name, proc in self.procs.items():
            try:
                self.cpu[name] = sum(proc.cpu_times()[:2]) - self.cpu_start[name]
            except psutil.Error:
                self.cpu[name] = float("nan")


def run_local(paths: list[Path], out: Path) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "asyncsync", "prepare", *map(str, paths), "-o", str(out), "--json"]
    m = measure(cmd, dict(os.environ), WORK)
    if m.returncode != 0:
        sys.exit(f"local prepare failed ({m.returncode}): {m.stderr[-2000:]}")
    summary = json.loads(m.stdout)
    return {
        "wall_s": m.wall_s,
        "cpu_s": m.cpu_user_s + m.cpu_sys_s,
        "peak_rss_tree_mb": m.peak_rss / 1e6,
        "parts": summary["parts"],
        "rows_read": summary["rows_read"],
        "rows_written": summary["rows_written"],
    }


def run_dask(
    paths: list[Path], out: Path, workers: int, p2p_buffer: str | None, chunk_bytes: int | None
) -> dict[str, Any]:
    import dask
    from distributed import Client, LocalCluster

    import asyncsync.dask

    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    config = {} if p2p_buffer is None else {"distributed.p2p.comm.buffer": p2p_buffer}
    with (
        dask.config.set(config),  # the nannies hand their configuration to the workers
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(workers)
        cluster_s = time.perf_counter() - started
        pids = {f"worker {i}": pid for i, pid in enumerate(client.run(os.getpid).values())}
        pids["client + scheduler"] = os.getpid()
        with PeakRss(pids) as rss:
            t0 = time.perf_counter()
            result = asyncsync.dask.prepare(
                paths,
                out_dir=out,
                client=client,
                chunk_bytes=chunk_bytes or asyncsync.dask.DEFAULT_CHUNK_BYTES,
            )
            wall = time.perf_counter() - t0
    manifest = result.to_manifest()
    return {
        "cluster_start_s": cluster_s,
        "wall_s": wall,
        "cpu_s": dict(rss.cpu),
        "peak_rss_mb": {k: v / 1e6 for k, v in rss.peak.items()},
        "parts": manifest["parts"],
        "rows_read": manifest["rows_read"],
        "rows_written": manifest["rows_written"],
    }


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="Dask worker processes")
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--chunk-bytes", type=int, default=None, help="text bytes per Dask task")
    parser.add_argument(
        "--p2p-buffer",
        default=None,
        help="the workers' distributed.p2p.comm.buffer (Dask's default: 1 GiB), e.g. 128MiB",
    )
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    paths = make_inputs(args.rows, args.files)
    size = sum(p.stat().st_size for p in paths)
    print(f"input: {args.files} files, {args.rows:,} rows, {size / 1e6:.0f} MB", flush=True)
    load_before = load()
    print(f"load average before (1, 5, 15 min): {load_before}", flush=True)
    local = run_local(paths, WORK / "local-out")
    print(
        f"local prepare:      {local['wall_s']:7.2f} s wall  {local['cpu_s']:7.2f} s CPU  "
        f"{args.rows / local['wall_s'] / 1e6:5.2f} M rows/s  "
        f"peak RSS (tree) {local['peak_rss_tree_mb']:.0f} MB",
        flush=True,
    )
    dask = run_dask(paths, WORK / "dask-out", args.workers, args.p2p_buffer, args.chunk_bytes)
    dask["p2p_comm_buffer"] = args.p2p_buffer or "1GiB (default)"
    dask["chunk_bytes"] = args.chunk_bytes or "default"
    cpu = sum(v for k, v in dask["cpu_s"].items() if k.startswith("worker"))
    print(
        f"dask prepare:       {dask['wall_s']:7.2f} s wall  {cpu:7.2f} s CPU (workers)  "
        f"{args.rows / dask['wall_s'] / 1e6:5.2f} M rows/s  "
        f"(+ {dask['cluster_start_s']:.2f} s to start the cluster; "
        f"P2P comm buffer {dask['p2p_comm_buffer']})",
        flush=True,
    )
    for name, mb in dask["peak_rss_mb"].items():
        print(f"  peak RSS {name}: {mb:.0f} MB")
    same = dask["parts"] == local["parts"]
    print(f"same parts (names, rows, bytes, MD5): {same}; parts: {len(local['parts'])}")
    print(f"dask wall / local wall: {dask['wall_s'] / local['wall_s']:.2f}x")
    load_after = load()
    print(f"load average after (1, 5, 15 min): {load_after}")
    if args.json_out:
        figures = {
            "rows": args.rows,
            "files": args.files,
            "bytes": size,
            "workers": args.workers,
            "local": {k: v for k, v in local.items() if k != "parts"},
            "dask": {k: v for k, v in dask.items() if k != "parts"},
            "parts": len(local["parts"]),
            "same_parts": same,
            "load_before": load_before,
            "load_after": load_after,
        }
        args.json_out.write_text(json.dumps(figures, indent=2) + "\n")
    shutil.rmtree(WORK / "local-out", ignore_errors=True)
    shutil.rmtree(WORK / "dask-out", ignore_errors=True)
    if not same:
        sys.exit("the two engines wrote different parts")


if __name__ == "__main__":
    main()
