"""Benchmark asyncsync against the alternatives on sample data, each contender in its own process.

    .venv/bin/python benchmarks/run.py [--rows 10000000] [--repeats 3] [--link wan|loopback]
        [--scaling 1000000,10000000,100000000] [--smoke]

What it does, in order:

1. Generates ``benchmarks/data/maid-ROWS.txt`` with ``asyncsync sample`` (kept for later runs).
2. Starts the sandbox (``python -m asyncsync sandbox``) in its own process on loopback, so that
   the server's CPU is not charged to any contender (it is reported on its own), emulating the
   ``--link`` profile.
3. Prepares the input once into parts of ``--part-bytes`` (50 MB) with ``asyncsync prepare``:
   the upload-only contenders all upload these same files.
4. Runs every contender ``--repeats`` times, alternating (the order rotates each round). Before
   each run the sandbox forgets every file and audience and the contender's work directory is
   deleted, so nothing carries over that a real run would not have. Each run is measured from
   outside: wall time, CPU time (user + sys of the contender's whole process tree, from
   ``getrusage(RUSAGE_CHILDREN)`` deltas), peak RSS (sum over the tree, sampled every 50 ms),
   bytes received and API calls (from the sandbox's own counters, the same meter for all), and
   the audience is checked to hold exactly the expected number of members once its operation has
   finished.
5. Optionally (``--scaling``) times ``asyncsync prepare`` alone over several input sizes.
6. Writes ``benchmarks/results/NAME.json`` and ``NAME.png`` (and ``NAME-scaling.png``), and
   prints a markdown table and the floors of issue 5 with their verdicts.

Contenders: ``naive`` (a per-line standard-library script, end to end), ``sdk`` (the official
TikTok SDK uploading the prepared parts with its thread pool, then creating the audience),
``prepare`` (``asyncsync prepare``), ``upload`` (asyncsync's ``TikTokClient`` uploading the
prepared parts, ``--concurrency`` (8) in flight, then creating the audience), ``sync``
(``asyncsync sync`` end to end, pipelined), ``aiohttp`` (a bare aiohttp multipart upload of the
prepared parts, as many in flight, then the create: the reference upload speed).

The sandbox emulates the network between the machine and TikTok (``--link``): ``wan`` (the
default) answers each request 50 ms late, reads each upload at most at 20 MB/s and all uploads
together at most at 125 MB/s; ``loopback`` emulates nothing, so the figures then show the
machine's own speed, the sandbox's CPU included.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import psutil  # type: ignore[import-untyped]

HERE = Path(__file__).resolve().parent
CONTENDERS = HERE / "contenders"
ADVERTISER = "7000000000000000001"
MB = 1_000_000
POLL_S = 0.05


# --------------------------------------------------------------------------- measuring


@dataclass
class Measured:
    """One contender process, measured from outside."""

    wall_s: float
    cpu_user_s: float
    cpu_sys_s: float
    peak_rss: int
    returncode: int
    stdout: str
    stderr: str
    processes: int
    rusage_cpu_s: float
    sampled_cpu_s: float

    @property
    def cpu_s(self) -> float:
        return self.cpu_user_s + self.cpu_sys_s


def measure(cmd: Sequence[str], env: dict[str, str], work: Path) -> Measured:
    """Run ``cmd`` to completion; wall time, CPU of the process tree, peak RSS of the tree.

    CPU comes from ``getrusage(RUSAGE_CHILDREN)`` before and after: it covers the process and
    every descendant it waited for (pool workers included); when the per-process CPU times
    sampled every ``POLL_S`` seconds add up to more (a descendant that was never waited for), the
    samples count. RSS is the sum over the live tree, sampled at the same time (shared pages are
    counted once per process).
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    seen: dict[int, tuple[float, float]] = {}
    with (
        tempfile.TemporaryFile(dir=work) as out,
        tempfile.TemporaryFile(dir=work) as err,
    ):
        start = time.perf_counter()
        proc = psutil.Popen(list(cmd), stdout=out, stderr=err, env=env)
        peak = 0
        while proc.poll() is None:
            total = 0
            try:
                tree = [proc, *proc.children(recursive=True)]
            except psutil.Error:
                tree = [proc]
            for p in tree:
                try:
                    with p.oneshot():
                        total += p.memory_info().rss
                        t = p.cpu_times()
                    seen[p.pid] = (t.user, t.system)
                except psutil.Error:
                    pass
            peak = max(peak, total)
            time.sleep(POLL_S)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        stdout, stderr = _read(out), _read(err)
    user = after.ru_utime - before.ru_utime
    system = after.ru_stime - before.ru_stime
    sampled_user = sum(u for u, _ in seen.values())
    sampled_sys = sum(s for _, s in seen.values())
    if sampled_user + sampled_sys > user + system:
        # A descendant outlived its parent's wait (a forkserver orphaned at exit): its CPU never
        # reaches RUSAGE_CHILDREN, but the samples saw it.
        user, system = sampled_user, sampled_sys
    return Measured(
        wall_s=wall,
        cpu_user_s=user,
        cpu_sys_s=system,
        peak_rss=peak,
        returncode=proc.returncode,
        stdout=stdout,
        stderr=stderr,
        processes=len(seen),
        rusage_cpu_s=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        sampled_cpu_s=sampled_user + sampled_sys,
    )


def _read(handle: IO[bytes]) -> str:
    handle.seek(0)
    return handle.read().decode("utf-8", "replace")


def last_json(text: str) -> dict[str, Any]:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            found: dict[str, Any] = json.loads(line)
            return found
    raise ValueError("no JSON line on stdout")


# --------------------------------------------------------------------------- sandbox

LINKS: dict[str, dict[str, Any]] = {
    # A machine in a data centre sending to TikTok's API across a wide-area path: each answer
    # comes a round trip plus handling later, one TCP stream carries about 160 Mbit/s over such
    # a path, and the machine's uplink is 1 Gbit/s.
    "wan": {"latency_ms": 50.0, "upload_mb_per_s": 20.0, "link_mb_per_s": 125.0},
    # No emulation: the sandbox reads as fast as loopback and its own CPU allow.
    "loopback": {"latency_ms": 0.0, "upload_mb_per_s": None, "link_mb_per_s": None},
}


def link_text(link: dict[str, Any]) -> str:
    if not link["latency_ms"] and link["upload_mb_per_s"] is None and link["link_mb_per_s"] is None:
        return "loopback, no emulated latency or speed cap"
    parts = [f"{link['latency_ms']:g} ms latency per request"]
    if link["upload_mb_per_s"] is not None:
        parts.append(f"{link['upload_mb_per_s']:g} MB/s per upload")
    if link["link_mb_per_s"] is not None:
        parts.append(f"{link['link_mb_per_s']:g} MB/s in total")
    return ", ".join(parts)


class SandboxProcess:
    """``asyncsync sandbox`` in its own process on loopback, driven over ``/_sandbox/``."""

    def __init__(self, work: Path, operation_seconds: float, link: dict[str, Any]) -> None:
        self.log = (work / "sandbox.log").open("wb")
        cmd = [sys.executable, "-m", "asyncsync", "sandbox", "--host", "127.0.0.1"]
        cmd += ["--port", "0", "--operation-seconds", str(operation_seconds), "--json"]
        cmd += ["--latency-ms", str(link["latency_ms"])]
        for flag in ("upload_mb_per_s", "link_mb_per_s"):
            if link[flag] is not None:
                cmd += ["--" + flag.replace("_", "-"), str(link[flag])]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            sys.exit(f"the sandbox did not start (see {self.log.name})")
        info = json.loads(line)
        self.api_base: str = info["api_base"]
        self.token: str = info["access_token"]
        self.ps = psutil.Process(self.proc.pid)

    def _call(self, method: str, path: str) -> dict[str, Any]:
        request = urllib.request.Request(self.api_base + path, method=method)
        if method == "POST":
            request.data = b"{}"
            request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=300) as answer:
            body: dict[str, Any] = json.load(answer)
        return body

    def state(self) -> dict[str, Any]:
        return self._call("GET", "/_sandbox/state")

    def restart(self) -> None:
        self._call("POST", "/_sandbox/restart")

    def requests(self) -> int:
        return sum(self.state()["request_counts"].values())

    def cpu_s(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def wait_members(self, audience_id: str, timeout: float) -> int:
        """The audience's member count once its operation has finished."""
        deadline = time.monotonic() + timeout
        while True:
            for audience in self.state()["audiences"]:
                if audience["audience_id"] == audience_id and audience["is_valid"]:
                    return int(audience["cover_num"])
            if time.monotonic() > deadline:
                sys.exit(f"audience {audience_id} did not settle within {timeout:.0f} s")
            time.sleep(0.1)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()


# --------------------------------------------------------------------------- contenders


@dataclass(frozen=True)
class Context:
    src: Path
    parts: Path
    work: Path
    api_base: str
    part_bytes: int
    concurrency: int
    workers: int | None


@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    uploads: bool
    reads_input: bool
    command: Callable[[Context, Path, str], list[str]]


def _asyncsync(*args: str) -> list[str]:
    return [sys.executable, "-m", "asyncsync", *args]


def _workers(ctx: Context) -> list[str]:
    return ["--workers", str(ctx.workers)] if ctx.workers else []


def _api(ctx: Context, name: str) -> list[str]:
    return ["--api-base", ctx.api_base, "--advertiser-id", ADVERTISER, "--name", name]


def _naive(ctx: Context, work: Path, name: str) -> list[str]:
    script = str(CONTENDERS / "naive.py")
    cmd = [sys.executable, script, "--input", str(ctx.src), "--work", str(work)]
    return [*cmd, *_api(ctx, name), "--max-file-bytes", str(ctx.part_bytes)]


def _sdk(ctx: Context, work: Path, name: str) -> list[str]:
    script = str(CONTENDERS / "sdk_upload.py")
    return [sys.executable, script, "--parts", str(ctx.parts), *_api(ctx, name)]


def _sdk_threads(ctx: Context, work: Path, name: str) -> list[str]:
    return [*_sdk(ctx, work, name), "--threads", str(ctx.concurrency)]


def _prepare(ctx: Context, work: Path, name: str) -> list[str]:
    out = ["prepare", str(ctx.src), "-o", str(work / "parts"), "--json"]
    return _asyncsync(*out, "--max-file-bytes", str(ctx.part_bytes), *_workers(ctx))


def _upload(ctx: Context, work: Path, name: str) -> list[str]:
    script = str(CONTENDERS / "asyncsync_upload.py")
    cmd = [sys.executable, script, "--parts", str(ctx.parts), *_api(ctx, name)]
    return [*cmd, "--concurrency", str(ctx.concurrency)]


def _sync(ctx: Context, work: Path, name: str) -> list[str]:
    cmd = _asyncsync("sync", str(ctx.src), *_api(ctx, name), "--state-dir", str(work / "state"))
    cmd += ["--max-file-bytes", str(ctx.part_bytes), "--concurrency", str(ctx.concurrency)]
    return [*cmd, *_workers(ctx), "--json"]


def _aiohttp(ctx: Context, work: Path, name: str) -> list[str]:
    script = str(CONTENDERS / "bare_aiohttp.py")
    cmd = [sys.executable, script, "--parts", str(ctx.parts), *_api(ctx, name)]
    return [*cmd, "--concurrency", str(ctx.concurrency)]


ALL: tuple[Contender, ...] = (
    Contender("naive", "naive script (end to end)", True, True, _naive),
    Contender("sdk", "official SDK upload + create", True, False, _sdk),
    Contender("prepare", "asyncsync prepare", False, True, _prepare),
    Contender("upload", "asyncsync upload + create", True, False, _upload),
    Contender("sync", "asyncsync sync (end to end)", True, True, _sync),
    Contender("aiohttp", "bare aiohttp upload + create", True, False, _aiohttp),
    Contender(
        "sdk-threads", "official SDK, pool patched to {n} threads", True, False, _sdk_threads
    ),
)
BY_KEY = {c.key: c for c in ALL}


@dataclass
class Bench:
    args: argparse.Namespace
    sandbox: SandboxProcess
    ctx: Context
    expected: dict[str, Any]
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def run_once(self, contender: Contender, round_no: int) -> dict[str, Any]:
        sb = self.sandbox
        work = self.ctx.work / f"run-{contender.key}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        sb.restart()
        env = dict(os.environ, TIKTOK_ACCESS_TOKEN=sb.token)
        name = f"bench {contender.key} {round_no}"
        cmd = contender.command(self.ctx, work, name)
        calls_before, cpu_before = sb.requests(), sb.cpu_s()
        load = os.getloadavg()[0]
        m = measure(cmd, env, work)
        sb_cpu = sb.cpu_s() - cpu_before
        if m.returncode != 0:
            sys.exit(
                f"{contender.key} failed with exit {m.returncode}:\n"
                f"{shlex.join(cmd)}\n{m.stderr[-3000:]}"
            )
        report = last_json(m.stdout)
        state = sb.state()
        calls = sb.requests() - calls_before  # /_sandbox/ calls are not counted
        run: dict[str, Any] = {
            "round": round_no,
            "wall_s": round(m.wall_s, 3),
            "cpu_s": round(m.cpu_s, 3),
            "cpu_user_s": round(m.cpu_user_s, 3),
            "cpu_sys_s": round(m.cpu_sys_s, 3),
            "rusage_cpu_s": round(m.rusage_cpu_s, 3),
            "sampled_cpu_s": round(m.sampled_cpu_s, 3),
            "peak_rss_mb": round(m.peak_rss / MB, 1),
            "processes": m.processes,
            "sandbox_cpu_s": round(sb_cpu, 3),
            "api_calls": calls,
            "bytes_uploaded": int(state["upload_bytes"]),
            "load_1m_before": round(load, 2),
        }
        rows = report.get("rows_read") if contender.reads_input else report.get("rows_written")
        run["rows"] = int(rows) if rows is not None else None
        run["rows_per_s"] = round(run["rows"] / m.wall_s) if run["rows"] else None
        mb = run["bytes_uploaded"] / MB
        run["mb_per_s"] = round(mb / m.wall_s, 2) if contender.uploads else None
        if report.get("upload_s"):
            run["upload_phase_s"] = round(report["upload_s"], 3)
            run["upload_phase_mb_per_s"] = round(run["bytes_uploaded"] / MB / report["upload_s"], 2)
        if "threads" in report:
            run["threads"] = report["threads"]
        self.check(contender, report, run)
        shutil.rmtree(work, ignore_errors=True)
        return run

    def check(self, contender: Contender, report: dict[str, Any], run: dict[str, Any]) -> None:
        """Every contender must have done the whole job: the same unique rows, delivered."""
        want = self.expected["rows_written"]
        got = report.get("rows_written")
        if got != want:
            sys.exit(f"{contender.key}: wrote {got} unique rows, expected {want}")
        if contender.reads_input and report.get("rows_read") != self.expected["rows_read"]:
            sys.exit(f"{contender.key}: read {report.get('rows_read')} rows")
        if not contender.uploads:
            return
        if run["bytes_uploaded"] != self.expected["bytes"]:
            sys.exit(
                f"{contender.key}: the sandbox received {run['bytes_uploaded']} bytes of files, "
                f"expected {self.expected['bytes']}"
            )
        audience_id = str(report["audience_id"])
        timeout = 60.0 + want / 200_000
        members = self.sandbox.wait_members(audience_id, timeout)
        if members != want:
            sys.exit(f"{contender.key}: audience {audience_id} holds {members}, expected {want}")
        run["members"] = members


# --------------------------------------------------------------------------- data


def sample(data: Path, rows: int) -> Path:
    data.mkdir(parents=True, exist_ok=True)
    src = data / f"maid-{rows}.txt"
    if not src.exists():
        print(f"generating {src} ...", file=sys.stderr, flush=True)
        tmp = src.with_suffix(".tmp")
        subprocess.run(_asyncsync("sample", "-n", str(rows), "-o", str(tmp)), check=True)
        tmp.rename(src)
    return src


def prepare_parts(src: Path, out: Path, part_bytes: int) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    cmd = _asyncsync("prepare", str(src), "-o", str(out), "--max-file-bytes", str(part_bytes))
    done = subprocess.run([*cmd, "--json"], check=True, capture_output=True, text=True)
    return last_json(done.stdout)


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        git = ["git", "-C", str(HERE)]
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True)
        status = subprocess.run([*git, "status", "--porcelain"], capture_output=True)
        commit_id = commit.stdout.decode().strip()
        dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    except OSError:
        commit_id, dirty = "", None
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": commit_id or None,
        "uncommitted_changes": dirty,
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
    }


# --------------------------------------------------------------------------- summary


METRICS = (
    "wall_s",
    "cpu_s",
    "peak_rss_mb",
    "rows_per_s",
    "mb_per_s",
    "upload_phase_mb_per_s",
    "api_calls",
    "sandbox_cpu_s",
)


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in METRICS:
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = round(statistics.median(values), 3) if values else None
    return out


def floors(med: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The floors of issues 5 and 15, evaluated on the medians (those whose contenders ran)."""
    out: list[dict[str, Any]] = []

    def have(*keys: str) -> bool:
        return all(k in med for k in keys)

    if have("sync", "prepare", "upload"):
        sequential = med["prepare"]["wall_s"] + med["upload"]["wall_s"]
        out.append(
            {
                "floor": "sync end to end is faster than prepare then upload, one after the other",
                "value": round(sequential / med["sync"]["wall_s"], 2),
                "unit": "x (prepare + upload wall) / sync wall",
                "target": 1.0,
                "detail": f"sync {med['sync']['wall_s']:.2f} s vs {sequential:.2f} s",
                "pass": med["sync"]["wall_s"] < sequential,
            }
        )
    if have("sync", "upload"):
        ratio = med["sync"]["wall_s"] / med["upload"]["wall_s"]
        out.append(
            {
                "floor": "sync end to end within 1.3x the upload alone of the same parts"
                " (hashing is not the long pole)",
                "value": round(ratio, 2),
                "unit": "x sync wall / upload wall",
                "target": 1.3,
                "detail": f"sync {med['sync']['wall_s']:.2f} s vs upload"
                f" {med['upload']['wall_s']:.2f} s",
                "pass": ratio <= 1.3,
            }
        )
    if have("sync", "naive"):
        ratio = med["sync"]["rows_per_s"] / med["naive"]["rows_per_s"]
        out.append(
            {
                "floor": "sync >= 4x the naive script's end-to-end throughput (aim 5x)",
                "value": round(ratio, 2),
                "unit": "x rows/s",
                "target": 4.0,
                "detail": f"{med['sync']['rows_per_s']:,.0f} vs {med['naive']['rows_per_s']:,.0f}"
                " rows/s",
                "pass": ratio >= 4.0,
            }
        )
    if have("upload", "sdk"):
        ratio = med["upload"]["mb_per_s"] / med["sdk"]["mb_per_s"]
        out.append(
            {
                "floor": "asyncsync upload >= 2x the official SDK's MB/s",
                "value": round(ratio, 2),
                "unit": "x MB/s",
                "target": 2.0,
                "detail": f"{med['upload']['mb_per_s']:.1f} vs {med['sdk']['mb_per_s']:.1f} MB/s;"
                f" peak RSS {med['upload']['peak_rss_mb']:.0f} vs"
                f" {med['sdk']['peak_rss_mb']:.0f} MB",
                "pass": ratio >= 2.0,
            }
        )
    if have("upload", "aiohttp"):
        ratio = med["upload"]["mb_per_s"] / med["aiohttp"]["mb_per_s"]
        out.append(
            {
                "floor": "asyncsync upload >= 70% of a bare aiohttp upload of the same parts",
                "value": round(ratio, 3),
                "unit": "fraction of MB/s",
                "target": 0.7,
                "detail": f"{med['upload']['mb_per_s']:.1f} vs {med['aiohttp']['mb_per_s']:.1f}"
                " MB/s",
                "pass": ratio >= 0.7,
            }
        )
    return out


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"{result['rows']:,} sample rows ({result['input_mb']:.0f} MB), "
        f"{result['parts']['count']} parts of <= {result['part_bytes'] / MB:.0f} MB, "
        f"median of {result['repeats']} runs; {m['cpu']}, {m['cores']} cores, "
        f"{m['ram_gib']} GiB RAM, Python {m['python']}, {m['date']}; "
        f"sandbox link: {link_text(result.get('link') or LINKS['loopback'])}",
        "",
        "| contender | wall s | CPU s | peak RSS MB | rows/s | MB/s uploaded | API calls "
        "| sandbox CPU s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for entry in result["contenders"].values():
        med = entry["median"]
        lines.append(
            f"| {entry['label']} | {_fmt(med['wall_s'], '.2f')} | {_fmt(med['cpu_s'], '.2f')} "
            f"| {_fmt(med['peak_rss_mb'], '.0f')} | {_fmt(med['rows_per_s'], ',.0f')} "
            f"| {_fmt(med['mb_per_s'], '.1f')} | {_fmt(med['api_calls'], '.0f')} "
            f"| {_fmt(med['sandbox_cpu_s'], '.2f')} |"
        )
    if result["floors"]:
        lines += ["", "| floor | measured | target | verdict |", "| --- | ---: | ---: | --- |"]
        for f in result["floors"]:
            verdict = "pass" if f["pass"] else "FAIL"
            lines.append(
                f"| {f['floor']} ({f['detail']}) | {f['value']} {f['unit']} | {f['target']} "
                f"| {verdict} |"
            )
    if result.get("part_size_rss"):
        lines += ["", "| uploader | part size MB | peak RSS MB | MB/s uploaded |"]
        lines += ["| --- | ---: | ---: | ---: |"]
        for row in result["part_size_rss"]:
            lines.append(
                f"| {row['label']} | {row['part_mb']:.0f} | {row['peak_rss_mb']:.0f} "
                f"| {row['mb_per_s']:.1f} |"
            )
    if result.get("scaling"):
        lines += [
            "",
            "| prepare input rows | wall s | wall s per M rows | CPU s | CPU s per M rows "
            "| peak RSS MB |",
            "| ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in result["scaling"]:
            cpu_per_m = row["cpu_s"] / (row["rows"] / 1e6)
            lines.append(
                f"| {row['rows']:,} | {row['wall_s']:.2f} | {row['s_per_m_rows']:.3f} "
                f"| {row['cpu_s']:.2f} | {cpu_per_m:.3f} | {row['peak_rss_mb']:.0f} |"
            )
    lines += ["", f"Command: `{result['command']}`"]
    return "\n".join(lines)


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = list(result["contenders"].values())
    labels = [e["label"] for e in entries]
    panels = [
        ("wall_s", "wall time, s (lower is better)"),
        ("peak_rss_mb", "peak RSS of the process tree, MB"),
        ("mb_per_s", "MB/s uploaded (higher is better)"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(16, 0.6 * len(labels) + 2.2))
    colours = [
        "#c44e52" if not e["key"].startswith(("prepare", "upload", "sync")) else "#4c72b0"
        for e in entries
    ]
    for ax, (metric, title) in zip(axes, panels, strict=True):
        values = [e["median"][metric] or 0.0 for e in entries]
        lows = [
            min((r[metric] for r in e["runs"] if r.get(metric) is not None), default=0.0)
            for e in entries
        ]
        highs = [
            max((r[metric] for r in e["runs"] if r.get(metric) is not None), default=0.0)
            for e in entries
        ]
        err = [
            [v - lo for v, lo in zip(values, lows, strict=True)],
            [hi - v for v, hi in zip(values, highs, strict=True)],
        ]
        ax.barh(labels, values, xerr=err, color=colours, capsize=3)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        for y, (v, hi) in enumerate(zip(values, highs, strict=True)):
            if v:
                ax.text(max(v, hi), y, f" {v:,.1f}", va="center", fontsize=8)
        if ax is not axes[0]:
            ax.set_yticklabels([])
    m = result["machine"]
    fig.suptitle(
        f"asyncsync vs alternatives: {result['rows']:,} sample IDs, parts of "
        f"{result['part_bytes'] / MB:.0f} MB, median of {result['repeats']} "
        f"(bars: min-max) - {m['cpu']}, {m['cores']} cores, {m['date'][:10]}\n"
        f"sandbox link: {link_text(result.get('link') or LINKS['loopback'])}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def scaling_chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r["rows"] / 1e6 for r in result["scaling"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(rows, [r["wall_s"] for r in result["scaling"]], "o-")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("input rows, millions")
    left.set_ylabel("wall time, s")
    left.set_title("asyncsync prepare: time (log-log; slope 1 = linear)", fontsize=10)
    right.plot(rows, [r["peak_rss_mb"] for r in result["scaling"]], "o-")
    right.set_xscale("log")
    right.set_ylim(bottom=0)
    right.set_xlabel("input rows, millions")
    right.set_ylabel("peak RSS of the process tree, MB")
    right.set_title("asyncsync prepare: memory", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("B")
    factor = {"K": 10**3, "M": 10**6, "G": 10**9}.get(text[-1:], 1)
    return int(float(text.rstrip("KMG")) * factor)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description="Benchmark asyncsync against the alternatives on sample data."
    )
    parser.add_argument("--rows", type=int, default=10_000_000, help="Sample rows (10 M).")
    parser.add_argument("--repeats", type=int, default=3, help="Runs per contender (3).")
    parser.add_argument(
        "--contenders",
        default=",".join(c.key for c in ALL),
        help="Comma-separated subset of: " + ", ".join(c.key for c in ALL),
    )
    parser.add_argument("--part-bytes", type=parse_size, default=50 * MB, help="Part size (50MB).")
    parser.add_argument(
        "--concurrency", type=int, default=8, help="Uploads in flight (8, the sync default)."
    )
    parser.add_argument(
        "--link",
        choices=sorted(LINKS),
        default="wan",
        help="The network the sandbox emulates: wan (default: "
        + link_text(LINKS["wan"])
        + ") or loopback (no emulation: the machine's own speed).",
    )
    parser.add_argument("--latency-ms", type=float, default=None, help="Override the link's.")
    parser.add_argument(
        "--upload-mb-per-s", type=float, default=None, help="Override the link's speed per upload."
    )
    parser.add_argument(
        "--link-mb-per-s", type=float, default=None, help="Override the link's total speed."
    )
    parser.add_argument("--workers", type=int, default=None, help="Hashing processes (auto).")
    parser.add_argument(
        "--operation-seconds", type=float, default=0.2, help="Sandbox operation time (0.2)."
    )
    parser.add_argument(
        "--big-part-bytes",
        type=parse_size,
        default=None,
        help="Also upload parts of this size once with the SDK and asyncsync, to show how each "
        "one's peak RSS follows the part size (default 200MB; 0 to skip).",
    )
    parser.add_argument(
        "--scaling",
        default="",
        help="Comma-separated input sizes for the prepare scaling curve, e.g. "
        "1000000,10000000,100000000.",
    )
    parser.add_argument("--name", default=None, help="Result file name (default: rows, e.g. 10M).")
    parser.add_argument("--results-dir", type=Path, default=HERE / "results")
    parser.add_argument("--data-dir", type=Path, default=HERE / "data")
    parser.add_argument("--work-dir", type=Path, default=HERE / "work")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="Fast check that the benchmark works: 100 k rows, 1 run, 2 MB parts, no big parts.",
    )
    parser.add_argument("--no-chart", action="store_true", help="Skip the PNG charts.")
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="JSON",
        help="Run nothing: print the table of a saved result and redraw its charts.",
    )
    args = parser.parse_args(argv)
    if args.report is not None:
        saved: dict[str, Any] = json.loads(args.report.read_text())
        if not args.no_chart:
            chart(saved, args.report.with_suffix(".png"))
            if saved.get("scaling"):
                scaling_chart(saved, args.report.with_name(args.report.stem + "-scaling.png"))
        print(markdown(saved))
        return saved
    if args.smoke:
        args.rows, args.repeats, args.part_bytes = 100_000, 1, 2 * MB
        args.big_part_bytes = args.big_part_bytes or 0
    if args.big_part_bytes is None:
        args.big_part_bytes = 200 * MB
    keys = [k.strip() for k in args.contenders.split(",") if k.strip()]
    unknown = [k for k in keys if k not in BY_KEY]
    if unknown or not keys:
        parser.error(f"unknown contenders {unknown}; choose from {', '.join(BY_KEY)}")
    contenders = [BY_KEY[k] for k in keys]
    link = dict(LINKS[args.link], profile=args.link)
    for key in ("latency_ms", "upload_mb_per_s", "link_mb_per_s"):
        if getattr(args, key) is not None:
            link[key] = getattr(args, key)
            link["profile"] = "custom"
    name = args.name or ("smoke" if args.smoke else _rows_name(args.rows))
    command = "python benchmarks/run.py " + shlex.join(
        list(argv) if argv is not None else sys.argv[1:]
    )

    info = machine()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    src = sample(args.data_dir, args.rows)
    parts_dir = args.work_dir / "parts"
    manifest = prepare_parts(src, parts_dir, args.part_bytes)
    expected = {
        "rows_read": manifest["rows_read"],
        "rows_written": manifest["rows_written"],
        "bytes": sum(p["bytes"] for p in manifest["parts"]),
    }
    result: dict[str, Any] = {
        "name": name,
        "command": command,
        "machine": info,
        "rows": args.rows,
        "input": str(src.relative_to(src.parent.parent)) if src.is_relative_to(HERE) else str(src),
        "input_mb": round(src.stat().st_size / MB, 1),
        "repeats": args.repeats,
        "part_bytes": args.part_bytes,
        "concurrency": args.concurrency,
        "operation_seconds": args.operation_seconds,
        "link": link,
        "parts": {
            "count": len(manifest["parts"]),
            "bytes": expected["bytes"],
            "rows_read": expected["rows_read"],
            "rows_written": expected["rows_written"],
        },
        "contenders": {},
    }
    sandbox = SandboxProcess(args.work_dir, args.operation_seconds, link)
    try:
        ctx = Context(
            src=src,
            parts=parts_dir,
            work=args.work_dir,
            api_base=sandbox.api_base,
            part_bytes=args.part_bytes,
            concurrency=args.concurrency,
            workers=args.workers,
        )
        bench = Bench(args, sandbox, ctx, expected)
        runs = bench.runs = {c.key: [] for c in contenders}
        for round_no in range(1, args.repeats + 1):
            shift = (round_no - 1) % len(contenders)
            for contender in contenders[shift:] + contenders[:shift]:
                run = bench.run_once(contender, round_no)
                runs[contender.key].append(run)
                print(
                    f"round {round_no} {contender.key:8} {run['wall_s']:7.2f} s  "
                    f"cpu {run['cpu_s']:7.2f} s  rss {run['peak_rss_mb']:6.0f} MB  "
                    f"calls {run['api_calls']}",
                    file=sys.stderr,
                    flush=True,
                )
        for contender in contenders:
            result["contenders"][contender.key] = {
                "key": contender.key,
                "label": contender.label.format(n=args.concurrency),
                "runs": runs[contender.key],
                "median": medians(runs[contender.key]),
            }
        if args.big_part_bytes:
            result["part_size_rss"] = big_parts(bench, contenders, src, args.big_part_bytes)
    finally:
        sandbox.close()
    result["floors"] = floors({k: v["median"] for k, v in result["contenders"].items()})
    if args.scaling:
        sizes = [int(s) for s in args.scaling.split(",") if s.strip()]
        result["scaling"] = scaling(args, sizes)
        result["floors"] += scaling_floors(result["scaling"])
    result["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]

    json_path = args.results_dir / f"{name}.json"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    if not args.no_chart:
        chart(result, args.results_dir / f"{name}.png")
        if result.get("scaling"):
            scaling_chart(result, args.results_dir / f"{name}-scaling.png")
    print(markdown(result))
    print(f"\nwrote {json_path}", file=sys.stderr)
    shutil.rmtree(parts_dir, ignore_errors=True)
    return result


def _rows_name(rows: int) -> str:
    if rows % 1_000_000 == 0:
        return f"{rows // 1_000_000}M"
    if rows % 1000 == 0:
        return f"{rows // 1000}k"
    return str(rows)


def big_parts(
    bench: Bench, contenders: Sequence[Contender], src: Path, part_bytes: int
) -> list[dict[str, Any]]:
    """The SDK and asyncsync's upload on the regular parts (medians above) and once on parts
    of ``part_bytes``: how each one's peak RSS follows the part size."""
    out: list[dict[str, Any]] = []
    keys = [c.key for c in contenders if c.key in ("sdk", "sdk-threads", "upload")]
    if not keys:
        return out
    regular = bench.ctx.part_bytes
    for key in keys:
        if bench.runs.get(key):
            med = medians(bench.runs[key])
            out.append(
                {
                    "key": key,
                    "label": BY_KEY[key].label.format(n=bench.ctx.concurrency),
                    "part_mb": regular / MB,
                    "peak_rss_mb": med["peak_rss_mb"],
                    "mb_per_s": med["mb_per_s"],
                }
            )
    big_dir = bench.ctx.work / "big-parts"
    manifest = prepare_parts(src, big_dir, part_bytes)
    largest = max(p["bytes"] for p in manifest["parts"])
    saved = bench.ctx
    bench.ctx = Context(**{**saved.__dict__, "parts": big_dir})
    try:
        for key in keys:
            run = bench.run_once(BY_KEY[key], 0)
            out.append(
                {
                    "key": key,
                    "label": BY_KEY[key].label.format(n=bench.ctx.concurrency),
                    "part_mb": largest / MB,
                    "peak_rss_mb": run["peak_rss_mb"],
                    "mb_per_s": run["mb_per_s"],
                    "run": run,
                }
            )
    finally:
        bench.ctx = saved
        shutil.rmtree(big_dir, ignore_errors=True)
    return out


SCALING_FLAT: Final = 1.15
"""How far above the 10 M-row time per million rows a larger input's may be and count as flat."""


def scaling_floors(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 15: prepare's time per million rows flat from 10 M rows up (at 1 M the interpreter
    and pool start-up weigh, so the curve starts at 10 M)."""
    base = next((r for r in rows if r["rows"] == 10_000_000), None)
    out: list[dict[str, Any]] = []
    for r in rows:
        if base is None or r["rows"] <= base["rows"]:
            continue
        ratio = r["s_per_m_rows"] / base["s_per_m_rows"]
        out.append(
            {
                "floor": f"prepare's wall s per M rows at {r['rows'] / 1e6:,.0f} M rows within"
                f" {SCALING_FLAT}x of 10 M (flat)",
                "value": round(ratio, 2),
                "unit": "x s per M rows",
                "target": SCALING_FLAT,
                "detail": f"{r['s_per_m_rows']:.3f} vs {base['s_per_m_rows']:.3f} s per M rows",
                "pass": ratio <= SCALING_FLAT,
            }
        )
    return out


def scaling(args: argparse.Namespace, sizes: Sequence[int]) -> list[dict[str, Any]]:
    """``asyncsync prepare`` alone over several input sizes: wall time and peak RSS."""
    out: list[dict[str, Any]] = []
    for rows in sizes:
        src = sample(args.data_dir, rows)
        target = args.work_dir / "scaling-out"
        shutil.rmtree(target, ignore_errors=True)
        cmd = _asyncsync("prepare", str(src), "-o", str(target), "--json")
        load = os.getloadavg()[0]
        m = measure(cmd, dict(os.environ), args.work_dir)
        shutil.rmtree(target, ignore_errors=True)
        if m.returncode != 0:
            sys.exit(f"prepare of {rows:,} rows failed: {m.stderr[-2000:]}")
        report = last_json(m.stdout)
        out.append(
            {
                "rows": rows,
                "rows_read": report["rows_read"],
                "wall_s": round(m.wall_s, 3),
                "s_per_m_rows": round(m.wall_s / (rows / 1e6), 4),
                "cpu_s": round(m.cpu_s, 3),
                "peak_rss_mb": round(m.peak_rss / MB, 1),
                "rows_per_s": round(rows / m.wall_s),
                "load_1m_before": round(load, 2),
            }
        )
        print(
            f"scaling {rows:>12,} rows {m.wall_s:8.2f} s  rss {m.peak_rss / MB:6.0f} MB",
            file=sys.stderr,
            flush=True,
        )
    return out


if __name__ == "__main__":
    main()
