"""The benchmark command runs end to end on 100 k rows and reports every contender sanely.

Runs ``benchmarks/run.py --smoke`` as a subprocess (its own sandbox process, every contender in
its own process) with data, work and results in ``tmp_path``, then checks the JSON it wrote.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("psutil", reason="the benchmark needs the bench extra")
pytest.importorskip("matplotlib", reason="the benchmark needs the bench extra")
pytest.importorskip("business_api_client", reason="the benchmark needs the bench extra")

ROOT = Path(__file__).resolve().parent.parent
CONTENDERS = ("naive", "sdk", "prepare", "upload", "sync", "aiohttp", "sdk-threads")
UPLOADERS = ("naive", "sdk", "upload", "sync", "aiohttp", "sdk-threads")


def test_smoke_benchmark_measures_every_contender_delivering_the_same_audience(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--smoke",
            "--results-dir",
            str(tmp_path / "results"),
            "--data-dir",
            str(tmp_path / "data"),
            "--work-dir",
            str(tmp_path / "work"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "results" / "smoke.json").read_text())
    png = (tmp_path / "results" / "smoke.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")

    assert result["rows"] == 100_000
    assert {"cpu", "cores", "ram_gib", "python", "date"} <= result["machine"].keys()
    assert result["link"] == {
        "profile": "wan",
        "latency_ms": 50.0,
        "upload_mb_per_s": 20.0,
        "link_mb_per_s": 125.0,
    }
    assert result["contenders"]["sdk-threads"]["label"] == "official SDK, pool patched to 8 threads"
    assert result["contenders"]["sdk-threads"]["runs"][0]["threads"] == 8
    assert result["contenders"]["sdk"]["runs"][0]["threads"] == result["machine"]["cores"]
    parts = result["parts"]
    assert parts["count"] >= 2  # 2 MB parts: the uploaders run several uploads at once
    assert 90_000 < parts["rows_written"] < parts["rows_read"] == 100_000
    assert set(result["contenders"]) == set(CONTENDERS)
    for key in CONTENDERS:
        entry = result["contenders"][key]
        (run,) = entry["runs"]
        med = entry["median"]
        assert 0 < med["wall_s"] < 60, key
        assert 0 < med["cpu_s"] < 60, key
        assert 10 < med["peak_rss_mb"] < 4000, key
        assert med["rows_per_s"] > 1000, key
        if key in UPLOADERS:
            # The sandbox received exactly the parts' bytes and the audience holds every row.
            assert run["bytes_uploaded"] == parts["bytes"], key
            assert run["members"] == parts["rows_written"], key
            assert med["mb_per_s"] > 0, key
            assert med["api_calls"] >= parts["count"] + 1, key
        else:
            assert med["api_calls"] == 0
            assert med["mb_per_s"] is None
    floors = result["floors"]
    assert len(floors) == 5  # issue 5's four, and sync within 1.3x of upload alone
    assert all(isinstance(f["pass"], bool) and f["value"] > 0 for f in floors)
    for entry in result["contenders"].values():
        assert f"| {entry['label']} |" in done.stdout
