"""Fuzz the input readers and normalizers with a large hypothesis budget.

    .venv/bin/python benchmarks/fuzz_inputs.py                  # 20,000 examples per target
    .venv/bin/python benchmarks/fuzz_inputs.py --examples 200000 --seed 7

Targets, each run for ``--examples`` generated inputs:

* ``normalize``: ``rules.ids.normalize`` on arbitrary bytes for every ID type returns a digestible
  value or a reason, and is idempotent on what it accepts.
* ``text``: plain, gzip and zstd files of hostile lines (random bytes, invalid UTF-8, BOMs, NUL
  bytes late in the file, CR, CRLF and LF mixed, long lines) read by ``open_inputs`` and
  ``iter_jobs`` with the smallest chunk sizes ``PrepareOptions`` allows (4096 bytes and just
  over, so that lines and records straddle many chunk boundaries), each chunk
  hashed by the pool worker's own function, in this process: every line is counted once, as
  valid or rejected with a reason, and the valid lines' digests are exactly the per-line oracle's;
  an input is refused exactly when its head is binary (``source.binary_reason``).
* ``csv``: CSV files with quoted fields, embedded delimiters, quotes and line ends, short records,
  blank lines and mixed line ends, read by column name: one row per CSV record, as above.

Each example runs under a 10 s alarm, so a hang fails like a crash. Prints one JSON line per
target (examples run, failures) and exits 1 on the first failure, showing the shrunk input.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gzip
import hashlib
import io
import json
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncsync.errors import InputError
from asyncsync.pipeline.dedupe import read_spilled
from asyncsync.pipeline.source import BOM, binary_reason, iter_jobs, open_inputs
from asyncsync.pipeline.worker import HashSettings, hash_job
from asyncsync.rules.hashing import REASONS, digest_size
from asyncsync.rules.ids import Reject, hash_id, normalize
from asyncsync.rules.limits import HashAlgo, IdType

KINDS = [IdType.AUTO, IdType.EMAIL, IdType.PHONE, IdType.SHA256, IdType.MD5]
MAID = b"5f3a2b18-9c4d-4e7f-b8e2-17d3a1e69b25"
SNIFF_BYTES = 64 * 1024
"""The head an input is judged text or binary on."""
PIECES = [
    MAID, MAID.upper(), b" " + MAID + b" ", b"00000000-0000-0000-0000-000000000000",
    b"Jane.Doe+x@Example.COM", b"a@b", b"user@.com", b"+44 (0)20 7946 0958", b"0012025550143",
    hashlib.sha256(b"x").hexdigest().encode(), hashlib.md5(b"x").hexdigest().encode().upper(),
    b"", b" ", b"\t", b"\r", b"\xef\xbb\xbf", b"\xff", b"\xc3\x28", b"\xed\xa0\x80",
    b'"', b'""', b",", "é".encode(), "😀".encode(), b"\x0b",
]  # fmt: skip
ENDS = [b"\n", b"\r\n", b"\r", b"\n\r", b""]


class Alarm(Exception):
    pass


@contextmanager
def alarm(seconds: int) -> Iterator[None]:
    def ring(signum: int, frame: Any) -> None:
        raise Alarm(f"no result within {seconds} s (a hang?)")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@st.composite
def hostile_bytes(draw: st.DrawFn) -> bytes:
    out = bytearray()
    if draw(st.integers(0, 19)) == 0:
        # NUL bytes past the 64 KiB sniffed for binary data: malformed lines, not a refusal.
        out += MAID * 1900 + b"\n\x00" + draw(st.sampled_from(ENDS))
    for _ in range(draw(st.integers(0, 60))):
        choice = draw(st.integers(0, 9))
        if choice == 0:
            out += draw(st.binary(max_size=100)).replace(b"\x00", b"\x01")
        elif choice == 1:
            out += draw(st.sampled_from(PIECES)) * draw(st.integers(1, 400))
        else:
            out += draw(st.sampled_from(PIECES))
        out += draw(st.sampled_from(ENDS))
    return bytes(out)


def oracle(values: list[bytes], kind: IdType, algo: HashAlgo) -> tuple[list[int], list[bytes]]:
    rejected = dict.fromkeys(REASONS, 0)
    digests: list[bytes] = []
    for value in values:
        result = normalize(value, kind)
        if isinstance(result, Reject):
            rejected[result] += 1
        else:
            digests.append(bytes.fromhex(hash_id(result, kind, algo).decode()))
    return [rejected[r] for r in REASONS], sorted(digests)


def read_all(path: Path, kind: IdType, algo: HashAlgo, column: str | None, chunk: int) -> Any:
    """Rows, rejected counts and sorted digests as the pipeline's readers and workers give them;
    None when the input is refused with an InputError."""
    spill = Path(tempfile.mkdtemp(prefix="fuzz-spill-"))
    hs = HashSettings(
        id_type=kind, hash_algo=algo, sample_cap=5, bucket_bits=2, spill_dir=str(spill)
    )
    size = digest_size(kind, algo)

    async def go() -> tuple[int, list[int], list[bytes]]:
        specs = await asyncio.to_thread(open_inputs, [str(path)], column, kind)
        rows, rejected, digests = 0, [0, 0, 0], []
        async for job in iter_jobs(specs, chunk):
            result = hash_job(job, hs)
            rows += result.rows
            rejected = [a + b for a, b in zip(rejected, result.rejected, strict=True)]
            data = read_spilled(result.spill, size, hs.bucket_bits)
            digests += [data[i : i + size] for i in range(0, len(data), size)]
        return rows, rejected, sorted(digests)

    try:
        return asyncio.run(go())
    except InputError:
        return None
    finally:
        for p in spill.iterdir():
            p.unlink()
        spill.rmdir()


def lines_of(data: bytes) -> list[bytes]:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


class Target:
    def __init__(self, name: str) -> None:
        self.name = name
        self.examples = 0
        self.refused = 0


def run_normalize(target: Target, budget: settings) -> None:
    @budget
    @given(raw=st.one_of(st.binary(max_size=300), hostile_bytes()), kind=st.sampled_from(KINDS))
    def check(raw: bytes, kind: IdType) -> None:
        target.examples += 1
        with alarm(10):
            result = normalize(raw, kind)
            if isinstance(result, Reject):
                assert result in REASONS
                return
            assert isinstance(result, bytes) and result
            assert normalize(result, kind) == result, (raw, result)

    check()


def run_text(target: Target, budget: settings, work: Path) -> None:
    @budget
    @given(
        data=hostile_bytes(),
        kind=st.sampled_from(KINDS),
        compression=st.sampled_from(["none", "gzip", "zstd"]),
        chunk=st.sampled_from([4096, 4099, 6000, 1 << 20]),
    )
    def check(data: bytes, kind: IdType, compression: str, chunk: int) -> None:
        target.examples += 1
        algo = HashAlgo.MD5 if kind is IdType.MD5 else HashAlgo.SHA256
        path = work / "input.txt"
        body = data
        if compression == "gzip":
            body = gzip.compress(data, compresslevel=1)
        elif compression == "zstd":
            body = zstandard.ZstdCompressor(level=1).compress(data)
        path.write_bytes(body)
        with alarm(10):
            got = read_all(path, kind, algo, None, chunk)
        head = data[len(BOM) :] if data.startswith(BOM) else data
        binary = binary_reason(head[:SNIFF_BYTES])
        if got is None:
            target.refused += 1
            assert binary is not None, "a text input was refused as binary"
            return
        assert binary is None, f"a binary input was read as text ({binary})"
        lines = lines_of(data)
        rejected, digests = oracle(lines, kind, algo)
        assert got[0] == len(lines), (got[0], len(lines))
        assert got[1] == rejected, (got[1], rejected)
        assert got[2] == digests

    check()


@st.composite
def hostile_csv(draw: st.DrawFn) -> bytes:
    field = st.sampled_from(
        [
            *(MAID.decode(), MAID.decode().upper(), "", " ", "x", "a,b", 'q"q', "l\nm", "l\r\nm"),
            "é",
            MAID.decode() * 150,  # a 5 kB field: a record across chunk boundaries
        ]
    )
    rows = [["note", "id"]] + [
        draw(st.lists(field, max_size=4)) for _ in range(draw(st.integers(0, 300)))
    ]
    out = []
    for row in rows:
        cells = [
            '"' + v.replace('"', '""') + '"'
            if draw(st.booleans()) or any(c in v for c in ',"\r\n')
            else v
            for v in row
        ]
        out.append(",".join(cells) + draw(st.sampled_from(["\n", "\r\n"])))
    return "".join(out).encode()


def run_csv(target: Target, budget: settings, work: Path) -> None:
    @budget
    @given(data=hostile_csv(), chunk=st.sampled_from([4096, 4099, 1 << 20]))
    def check(data: bytes, chunk: int) -> None:
        target.examples += 1
        path = work / "input.csv"
        path.write_bytes(data)
        with alarm(10):
            got = read_all(path, IdType.AUTO, HashAlgo.SHA256, "id", chunk)
        if got is None:
            target.refused += 1
            return
        records = list(csv.reader(io.StringIO(data.decode(), newline="")))[1:]
        values = [(r[1].encode() if len(r) > 1 else b"\x00") if r else b"" for r in records]
        rejected, digests = oracle(values, IdType.AUTO, HashAlgo.SHA256)
        assert got[0] == len(records), (got[0], len(records))
        assert got[1] == rejected, (got[1], rejected)
        assert got[2] == digests

    check()


def main() -> int:
    warnings.simplefilter("ignore")  # hypothesis warns about the repr of 68 kB examples
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=20_000, help="per target")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--targets", default="normalize,text,csv")
    args = parser.parse_args()
    budget = settings(
        max_examples=args.examples,
        deadline=None,
        database=None,
        derandomize=args.seed is None and False,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    if args.seed is not None:
        import random

        random.seed(args.seed)
    runners: dict[str, Callable[[Target], None]] = {}
    with tempfile.TemporaryDirectory(prefix="asyncsync-fuzz-") as tmp:
        work = Path(tmp)
        runners = {
            "normalize": lambda t: run_normalize(t, budget),
            "text": lambda t: run_text(t, budget, work),
            "csv": lambda t: run_csv(t, budget, work),
        }
        status = 0
        for name in args.targets.split(","):
            target = Target(name)
            started = time.monotonic()
            failure = None
            try:
                runners[name](target)
            except Exception as exc:  # a falsified property: report it and stop
                failure = f"{type(exc).__name__}: {exc}"
                status = 1
                traceback.print_exception(exc, file=sys.stderr)
            print(
                json.dumps(
                    {
                        "target": name,
                        "examples": target.examples,
                        "refused_as_input_error": target.refused,
                        "seconds": round(time.monotonic() - started, 1),
                        "failure": failure,
                    }
                ),
                flush=True,
            )
            if failure:
                break
    return status


if __name__ == "__main__":
    sys.exit(main())
