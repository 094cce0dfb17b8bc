"""Soak: one ``asyncsync sync`` of many IDs through a sandbox that misbehaves on purpose.

    .venv/bin/python benchmarks/soak.py                    # 20 M IDs
    .venv/bin/python benchmarks/soak.py --ids 2000000      # a shorter run

Writes an export of ``--ids`` distinct random mobile IDs (a third upper-cased, plus a padded
duplicate and an invalid line every 1,000 IDs) into ``--work``, starts the sandbox in its own
process with 10 % rate-limit answers (40100), 2 % TikTok 5xx codes (50002), 1 % dropped
connections and 5 % answers delayed by ``--slow-seconds``, and runs the whole job
(``asyncsync sync … --json``) in its own process with the default retry policy.

While it runs, the resident memory (RSS) of the client process alone and of its whole tree (the
hashing pool included) is sampled every 0.2 s; the report gives the peaks and the client's RSS
at each quarter of the run, which stays flat if memory does not grow with the input.

At the end it checks, against the sandbox's own record, that exactly one audience of that name
exists and that its members are exactly the SHA-256 digests of the generated IDs (the count and
a SHA-256 over the sorted digests, computed here independently of asyncsync), and prints one
JSON report (also written to ``--report``). Exit status 0 means the audience ended exact.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import psutil

TOKEN = "soak-token-0000"
ADVERTISER = "7000000000000000123"


def write_export(path: Path, n: int, seed: int) -> tuple[int, str]:
    """Write the export; return (distinct IDs, SHA-256 over their sorted hex digests joined by
    newlines), the figure the sandbox's ``/_sandbox/audiences/ID/members`` reports."""
    digests = np.empty(n, dtype="S32")
    block = 250_000
    with path.open("w") as out:
        for start in range(0, n, block):
            count = min(block, n - start)
            raw = hashlib.shake_256(f"soak:{seed}:{start}".encode()).hexdigest(16 * count)
            lines: list[str] = []
            for j in range(count):
                i = start + j
                h = raw[32 * j : 32 * j + 32]
                maid = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
                digests[i] = hashlib.sha256(maid.encode()).digest()
                lines.append(maid.upper() if i % 3 == 0 else maid)
                if i % 1000 == 0:
                    lines.append(f"  {maid}\t")
                    lines.append("not-a-mobile-id")
            out.write("\n".join(lines) + "\n")
    digests.sort()
    unique = np.unique(digests)
    h = hashlib.sha256()
    first = True
    for value in unique:
        # numpy's S dtype drops trailing NUL bytes: pad them back.
        h.update((b"" if first else b"\n") + value.ljust(32, b"\0").hex().encode())
        first = False
    return len(unique), h.hexdigest()


class RssSampler(threading.Thread):
    """Samples the RSS of a process and of its whole tree until stopped."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []  # (t, client rss, tree rss)
        self.halt = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        while not self.halt.is_set():
            try:
                own = self.proc.memory_info().rss
                tree = own
                for child in self.proc.children(recursive=True):
                    try:
                        tree += child.memory_info().rss
                    except psutil.Error:
                        pass
            except psutil.Error:
                break
            if own:  # an exited process reads as 0
                self.samples.append((time.monotonic() - started, own, tree))
            self.halt.wait(self.interval)


def control(api_base: str, path: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{api_base}/_sandbox/{path}",
        data=data,
        headers={"Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=600) as answer:
        return json.load(answer)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", type=int, default=20_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-file-bytes", default="5MB", help="part size (small: more faults)")
    parser.add_argument("--paths-per-call", default="20")
    parser.add_argument("--slow-seconds", type=float, default=2.0)
    parser.add_argument("--work", type=Path, default=None, help="[default: a temporary dir]")
    parser.add_argument("--report", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="asyncsync-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    export = work / f"soak-{args.ids}.txt"
    t0 = time.monotonic()
    expected_count, expected_sha = write_export(export, args.ids, args.seed)
    generated_s = time.monotonic() - t0
    print(f"soak: wrote {export} ({export.stat().st_size / 1e9:.2f} GB, {expected_count:,} "
          f"distinct IDs) in {generated_s:.0f} s", file=sys.stderr)  # fmt: skip

    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIKTOK_", "ASYNCSYNC_"))}
    sandbox = subprocess.Popen(
        [
            sys.executable, "-m", "asyncsync", "sandbox", "--port", "0", "--json",
            "--token", TOKEN, "--operation-seconds", "0.5", "--seed", str(args.seed),
            "--rate-limit", "0.10", "--server-error", "0.02", "--drop", "0.01",
            "--slow", "0.05", "--slow-seconds", str(args.slow_seconds),
            "--fault-seed", str(args.seed),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )  # fmt: skip
    try:
        assert sandbox.stdout is not None
        api_base = json.loads(sandbox.stdout.readline())["api_base"]
        name = f"soak {args.ids}"
        state = work / "state"
        shutil.rmtree(state, ignore_errors=True)
        cmd = [
            sys.executable, "-m", "asyncsync", "sync", str(export),
            "--advertiser-id", ADVERTISER, "--name", name, "--api-base", api_base,
            "--state-dir", str(state), "--max-file-bytes", args.max_file_bytes,
            "--paths-per-call", args.paths_per_call, "--json",
        ]  # fmt: skip
        started = time.monotonic()
        job = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**env, "TIKTOK_ACCESS_TOKEN": TOKEN},
        )
        sampler = RssSampler(job.pid)
        sampler.start()
        out, err = job.communicate()
        sampler.halt.set()
        sampler.join()
        elapsed = time.monotonic() - started
        if job.returncode != 0:
            print(err.decode()[-4000:], file=sys.stderr)
            print(f"soak: the job failed with exit {job.returncode}", file=sys.stderr)
            return 1
        summary = json.loads(out)
        control(api_base, "clock", {"advance_seconds": 3600})
        state_now = control(api_base, "state")
        audiences = [a for a in state_now["audiences"] if a["name"] == name]
        members = control(api_base, f"audiences/{summary['audience_id']}/members")
    finally:
        sandbox.terminate()
        sandbox.wait(30)
        if sandbox.stdout is not None:
            sandbox.stdout.close()

    samples = sampler.samples
    quarters = [
        round(samples[min(len(samples) - 1, int(len(samples) * q))][1] / 2**20)
        for q in (0.25, 0.5, 0.75, 1.0)
    ] if samples else []  # fmt: skip
    exact = (
        len(audiences) == 1
        and audiences[0]["audience_id"] == summary["audience_id"]
        and members["count"] == expected_count
        and members["sha256"] == expected_sha
    )
    report = {
        "ids": args.ids,
        "distinct_ids": expected_count,
        "input_bytes": export.stat().st_size,
        "elapsed_s": round(elapsed, 1),
        "ids_per_s": round(args.ids / elapsed),
        "parts": summary["parts"],
        "api_calls": summary["api_calls"],
        "retries": summary["retries"],
        "faults_injected": state_now["fault_counts"],
        "requests": state_now["request_counts"],
        "client_peak_rss_mib": round(max(s[1] for s in samples) / 2**20) if samples else None,
        "client_rss_mib_by_quarter": quarters,
        "tree_peak_rss_mib": round(max(s[2] for s in samples) / 2**20) if samples else None,
        "audiences_with_that_name": len(audiences),
        "members": members["count"],
        "exact": exact,
    }
    text = json.dumps(report, indent=2, sort_keys=True)
    print(text)
    if args.report:
        args.report.write_text(text + "\n")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
