"""`asyncsync sample`: realistic, reproducible sample exports that prepare accepts."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from click.testing import CliRunner

from asyncsync.cli import main
from asyncsync.rules.ids import Reject, normalize
from asyncsync.sample import write_sample


def reasons(lines: list[bytes], kind: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in lines:
        r = normalize(line, kind)
        key = r.value if isinstance(r, Reject) else "valid"
        out[key] = out.get(key, 0) + 1
    return out


def test_maid_sample_has_mixed_case_duplicates_and_every_reject_reason(tmp_path: Path) -> None:
    path = tmp_path / "s.txt"
    write_sample(path, 50_000, seed=3)
    lines = path.read_bytes().splitlines()
    assert len(lines) == 50_000
    counts = reasons(lines, "maid")
    assert counts["empty"] > 0 and counts["malformed"] > 0 and counts["zero_id"] > 0
    assert counts["valid"] > 0.98 * 50_000
    valid = [normalize(x, "maid") for x in lines]
    normalized = [v for v in valid if not isinstance(v, Reject)]
    dup_share = 1 - len(set(normalized)) / len(normalized)
    assert 0.01 < dup_share < 0.06
    assert any(x.isupper() for x in lines[:100]) and any(x.islower() for x in lines[:100])
    case_only = {x.lower() for x in lines if x.strip()}
    assert len(case_only) < len({x for x in lines if x.strip()})  # some differ only in case


def test_same_seed_same_bytes_and_gzip_variant(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c.gz"
    write_sample(a, 5000, seed=9)
    write_sample(b, 5000, seed=9)
    write_sample(c, 5000, seed=9, compress=True)
    assert a.read_bytes() == b.read_bytes() == gzip.decompress(c.read_bytes())
    write_sample(b, 5000, seed=10)
    assert a.read_bytes() != b.read_bytes()


def test_email_and_phone_samples_are_mostly_valid_with_noise(tmp_path: Path) -> None:
    for kind in ("email", "phone"):
        path = tmp_path / kind
        write_sample(path, 5000, kind=kind, seed=1)
        counts = reasons(path.read_bytes().splitlines(), kind)
        assert counts["valid"] > 0.8 * 5000
        assert counts.get("malformed", 0) > 0 and counts.get("empty", 0) > 0


def test_sample_command_writes_then_prepare_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "ids.txt.gz"
    runner = CliRunner()
    res = runner.invoke(main, ["sample", "-n", "20000", "-o", str(path), "--gzip", "--seed", "2"])
    assert res.exit_code == 0, res.stderr
    lines = gzip.decompress(path.read_bytes()).splitlines()
    res = runner.invoke(main, ["prepare", str(path), "-o", str(tmp_path / "out"), "--json"])
    assert res.exit_code == 0, res.stderr
    summary = json.loads(res.stdout)
    counts = reasons(lines, "maid")
    assert summary["rows_read"] == 20000
    assert summary["rows_invalid"] == 20000 - counts["valid"]
