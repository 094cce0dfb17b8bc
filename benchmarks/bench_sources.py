"""Benchmark: `asyncsync prepare` of the same IDs as a local text file, a local Parquet file, and
a text file in an S3-compatible store on loopback.

    .venv/bin/python benchmarks/bench_sources.py --rows 10000000

Generates ``benchmarks/data/maid-ROWS.txt`` with ``asyncsync sample`` (kept for later runs) and
``benchmarks/data/maid-ROWS.parquet`` holding the same lines as one string column (``idfa``, row
groups of 1 M rows, snappy), starts ``moto`` in server mode on a free loopback port and puts
the text file there as ``s3://bench/maid-ROWS.txt``, then times each of

* ``text``: ``asyncsync prepare maid-ROWS.txt -o DIR --json``
* ``parquet``: ``asyncsync prepare maid-ROWS.parquet -o DIR --json``
* ``s3-text``: ``asyncsync prepare s3://bench/maid-ROWS.txt -o DIR --json`` (``AWS_ENDPOINT_URL``
  pointing at the server)

``--only text,parquet`` times a subset (the floors of the inputs left out are not checked).
``--parquet-codecs none,lz4,zstd`` also times the same column written with each of those codecs
(``parquet-none``...; ``maid-ROWS.CODEC.parquet``), reported beside the snappy file, whose
rows/s the floor is checked on.
``--repeats`` times, alternating (the order rotates each round), each in its own process, measured
as ``run.py`` measures (wall time from spawn to exit). All three must write the same parts (same
MD5s); the medians are checked against the floors of the remote and Parquet inputs: Parquet at
least as fast as text in rows/s, S3 text within 1.3x of local text. The S3 server shares the
machine's cores with ``prepare``. Prints a table, the load average before and after, and writes
``results/sources-ROWS.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from run import measure as measure_tree

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
WORK = HERE / "work"
RESULTS = HERE / "results"
BUCKET = "bench"
PARQUET_FLOOR = 1.0
"""Parquet rows/s over text rows/s must be at least this."""
S3_FLOOR = 1.3
"""S3 wall time over local wall time must be at most this."""
CONTENDERS = ("text", "parquet", "s3-text")


def loadavg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def sample(rows: int) -> Path:
    src = DATA / f"maid-{rows}.txt"
    if not src.exists():
        print(f"generating {src} ...", flush=True)
        tmp = src.with_suffix(".tmp")
        subprocess.run(
            [sys.executable, "-m", "asyncsync", "sample", "-n", str(rows), "-o", str(tmp)],
            check=True,
        )
        tmp.rename(src)
    return src


def to_parquet(src: Path, codec: str = "snappy") -> Path:
    """The lines of ``src`` as one string column, written in 1 M-row row groups with ``codec``
    (``maid-ROWS.parquet`` for snappy, else ``maid-ROWS.CODEC.parquet``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    dst = src.with_suffix(".parquet" if codec == "snappy" else f".{codec}.parquet")
    if dst.exists():
        return dst
    print(f"writing {dst} ...", flush=True)
    schema = pa.schema([("idfa", pa.string())])
    tmp = dst.with_suffix(".tmp")
    with src.open("rb") as f, pq.ParquetWriter(tmp, schema, compression=codec) as writer:
        batch: list[str] = []
        for line in f:
            batch.append(line.rstrip(b"\r\n").decode("utf-8", "replace"))
            if len(batch) == 1_000_000:
                writer.write_table(pa.table({"idfa": batch}, schema=schema))
                batch = []
        if batch:
            writer.write_table(pa.table({"idfa": batch}, schema=schema))
    tmp.rename(dst)
    return dst


class S3Server:
    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            AWS_ENDPOINT_URL=self.url,
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_DEFAULT_REGION="us-east-1",
        )
        return env

    def put(self, path: Path) -> str:
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )
        client.create_bucket(Bucket=BUCKET)
        client.upload_file(str(path), BUCKET, path.name)
        return f"s3://{BUCKET}/{path.name}"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def engine() -> str:
    """The hashing engine ``prepare`` uses here (``ASYNCSYNC_ENGINE``, native when built)."""
    from asyncsync.rules.engine import active_engine

    return active_engine()


def run_once(name: str, source: str, env: dict[str, str], workers: int | None) -> dict[str, Any]:
    out = WORK / f"sources-{name}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "asyncsync", "prepare", source, "-o", str(out), "--json"]
    if workers:
        cmd += ["--workers", str(workers)]
    m = measure_tree(cmd, env, WORK)
    if m.returncode != 0:
        sys.exit(f"{name} failed ({m.returncode}): {m.stderr[-2000:]}")
    summary = json.loads(m.stdout)
    shutil.rmtree(out, ignore_errors=True)
    return {
        "wall_s": m.wall_s,
        "cpu_s": m.cpu_s,
        "peak_rss": m.peak_rss,
        "rows_read": summary["rows_read"],
        "md5s": [p["md5"] for p in summary["parts"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument(
        "--only",
        default=",".join(CONTENDERS),
        help="comma-separated inputs to time (default: all of %(default)s)",
    )
    parser.add_argument(
        "--parquet-codecs",
        default="",
        help="comma-separated Parquet codecs (none, lz4, zstd, gzip) also timed, beside snappy",
    )
    args = parser.parse_args()
    codecs = [c.strip() for c in args.parquet_codecs.split(",") if c.strip() not in ("", "snappy")]
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(CONTENDERS))
    if unknown or not only:
        parser.error(f"--only: pick from {', '.join(CONTENDERS)} (not {', '.join(unknown)})")
    DATA.mkdir(exist_ok=True)
    WORK.mkdir(exist_ok=True)
    text = sample(args.rows)
    parquet = to_parquet(text)
    print(
        f"text {text.stat().st_size / 1e6:.0f} MB, parquet {parquet.stat().st_size / 1e6:.0f} MB",
        flush=True,
    )
    server = S3Server() if "s3-text" in only else None
    try:
        contenders = {
            "text": (str(text), dict(os.environ)),
            "parquet": (str(parquet), dict(os.environ)),
        }
        if server is not None:
            contenders["s3-text"] = (server.put(text), server.env())
        contenders = {name: contenders[name] for name in CONTENDERS if name in only}
        for codec in codecs:
            contenders[f"parquet-{codec}"] = (str(to_parquet(text, codec)), dict(os.environ))
        load_before = loadavg()
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in contenders}
        order = list(contenders)
        for r in range(args.repeats):
            for name in order[r % len(order) :] + order[: r % len(order)]:
                source, env = contenders[name]
                run = run_once(name, source, env, args.workers)
                runs[name].append(run)
                rate = run["rows_read"] / run["wall_s"]
                print(f"  {name:8} {run['wall_s']:7.2f} s  {rate:>12,.0f} rows/s", flush=True)
        load_after = loadavg()
    finally:
        if server is not None:
            server.stop()
    md5s = {name: rs[0]["md5s"] for name, rs in runs.items()}
    assert len({tuple(v) for v in md5s.values()}) == 1, (
        f"the contenders wrote different parts: {md5s}"
    )
    median = {name: statistics.median(r["wall_s"] for r in rs) for name, rs in runs.items()}
    rows = next(iter(runs.values()))[0]["rows_read"]
    verdicts: dict[str, dict[str, Any]] = {}
    if "text" in median and "parquet" in median:
        parquet_ratio = median["text"] / median["parquet"]  # Parquet rows/s over text rows/s
        verdicts["parquet_rows_per_s_over_text"] = {
            "value": round(parquet_ratio, 3),
            "floor": f">= {PARQUET_FLOOR}",
            "pass": parquet_ratio >= PARQUET_FLOOR,
        }
    if "text" in median and "s3-text" in median:
        s3_ratio = median["s3-text"] / median["text"]
        verdicts["s3_wall_over_local"] = {
            "value": round(s3_ratio, 3),
            "floor": f"<= {S3_FLOOR}",
            "pass": s3_ratio <= S3_FLOOR,
        }
    for codec in codecs:
        if "text" in median:
            ratio = median["text"] / median[f"parquet-{codec}"]
            verdicts[f"parquet_{codec}_rows_per_s_over_text"] = {"value": round(ratio, 3)}
    print()
    cpu = {name: statistics.median(r["cpu_s"] for r in rs) for name, rs in runs.items()}
    print("| input | median wall s | rows/s | median CPU s | peak RSS MB |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, rs in runs.items():
        rss = max(r["peak_rss"] for r in rs) / 1e6
        print(
            f"| {name} | {median[name]:.2f} | {rows / median[name]:,.0f} | {cpu[name]:.2f} "
            f"| {rss:,.0f} |"
        )
    print()
    for key, v in verdicts.items():
        if "floor" not in v:
            print(f"{key}: {v['value']} (no floor)")
            continue
        print(f"{key}: {v['value']} (floor {v['floor']}): {'PASS' if v['pass'] else 'FAIL'}")
    print(f"load average before {load_before}, after {load_after} ({os.cpu_count()} cores)")
    print(f"engine: {engine()}")
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"sources-{args.rows}.json"
    out.write_text(
        json.dumps(
            {
                "command": " ".join(["benchmarks/bench_sources.py", *sys.argv[1:]]),
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "engine": engine(),
                "load_before": load_before,
                "load_after": load_after,
                "rows": rows,
                "runs": runs,
                "median_wall_s": median,
                "median_cpu_s": cpu,
                "verdicts": verdicts,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
