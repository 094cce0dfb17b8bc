"""Phone and email normalization as TikTok's help center asks ("List of supported IDs and
formats for a customer file"), with TikTok's published example hashes as test vectors."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from asyncsync.errors import UsageError
from asyncsync.pipeline.prepare import PrepareOptions
from asyncsync.rules.hashing import hash_chunk
from asyncsync.rules.ids import Reject, check_default_country, is_national_phone, normalize

TIKTOK_PHONE = b"37493828222"
"""TikTok's example: digits with the country code, no ``+``; sha256 starts 65b7e6dc."""
TIKTOK_EMAIL = b"janedoe@gmail.com"
"""sha256 starts d6117306."""


def sha(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()


def test_tiktok_vectors_hash_as_published() -> None:
    assert sha(TIKTOK_PHONE).startswith("65b7e6dc")
    assert sha(TIKTOK_EMAIL).startswith("d6117306")


@pytest.mark.parametrize(
    "line",
    [
        b"+374 93 828222",
        b"+374 (93) 82-82-22",
        b"0037493828222",
        b"00 374 93 828222",
        b"37493828222",
    ],
)
def test_international_and_bare_numbers_without_a_default_country(line: bytes) -> None:
    assert normalize(line, "phone") == TIKTOK_PHONE


@pytest.mark.parametrize("line", [b"093 828222", b"07700 900123", b"(0) 7700 900123"])
def test_a_national_number_without_default_country_is_malformed_not_stripped(line: bytes) -> None:
    assert normalize(line, "phone") is Reject.MALFORMED
    assert is_national_phone(line)


def test_only_a_single_leading_zero_marks_a_national_number() -> None:
    assert not is_national_phone(b"0037493828222")
    assert not is_national_phone(b"+37493828222")
    assert not is_national_phone(b"37493828222")
    assert normalize(b"+0 37493828222", "phone") is Reject.MALFORMED


@pytest.mark.parametrize(
    ("line", "country", "expected"),
    [
        (b"093 828222", "AM", TIKTOK_PHONE),
        (b"37493828222", "AM", TIKTOK_PHONE),
        (b"+374 93 828222", "AM", TIKTOK_PHONE),
        (b"0037493828222", "AM", TIKTOK_PHONE),
        (b"4155550100", "US", b"14155550100"),
        (b"14155550100", "US", b"14155550100"),
        (b"(415) 555-0100", "US", b"14155550100"),
        (b"+1 415 555 0100", "GB", b"14155550100"),
        (b"07700 900123", "GB", b"447700900123"),
        (b"447700900123", "GB", b"447700900123"),
        (b"06 12 34 56 78", "FR", b"33612345678"),
        # Italy keeps its leading zero after the calling code.
        (b"06 4512 3456", "IT", b"390645123456"),
    ],
)
def test_default_country_reads_numbers_as_libphonenumber_does(
    line: bytes, country: str, expected: bytes
) -> None:
    assert normalize(line, "phone", country) == expected


def test_default_country_still_rejects_what_is_not_a_number() -> None:
    assert normalize(b"555-CALL-NOW", "phone", "US") is Reject.MALFORMED
    assert normalize(b"12", "phone", "US") is Reject.MALFORMED
    assert normalize(b"", "phone", "US") is Reject.EMPTY


def test_the_chunk_hasher_takes_the_default_country() -> None:
    data = b"093 828222\n+37493828222\n0037493828222\n"
    without = hash_chunk(data, id_type="phone")
    with_am = hash_chunk(data, id_type="phone", default_country="AM")
    assert without.rejected == (0, 1, 0)
    assert with_am.rejected == (0, 0, 0)
    assert {h.decode() for h in with_am.hex_digests()} == {sha(TIKTOK_PHONE)}


@pytest.mark.parametrize(
    "line",
    [
        b"jane doe@gmail.com",
        b" Jane Doe+news @ Gmail.com ",
        b"JANEDOE@GMAIL.COM",
        b"janedoe+x@gmail.com",
    ],
)
def test_emails_lose_every_space_inside_and_their_plus_tag(line: bytes) -> None:
    out = normalize(line, "email")
    assert out == TIKTOK_EMAIL


def test_default_country_is_checked() -> None:
    assert check_default_country(" gb ") == "GB"
    assert PrepareOptions(id_type="phone", default_country="us").default_country == "US"
    for bad in ("UK1", "XX", "", "USA"):
        with pytest.raises(ValueError, match="ISO 3166"):
            check_default_country(bad)
    with pytest.raises(UsageError, match="--default-country"):
        PrepareOptions(id_type="phone", default_country="XX")


def _prepare(tmp_path: Path, lines: bytes, *extra: str) -> tuple[int, dict[str, object], str]:
    source = tmp_path / "phones.txt"
    source.write_bytes(lines)
    out = tmp_path / f"out{len(extra)}"
    run = subprocess.run(
        [sys.executable, "-m", "asyncsync", "prepare", str(source), "-o", str(out),
         "--id-type", "phone", "--workers", "1", "--json", *extra],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    summary = json.loads(run.stdout) if run.returncode == 0 else {}
    return run.returncode, summary, run.stderr


def test_prepare_cli_reads_national_numbers_only_with_default_country(tmp_path: Path) -> None:
    lines = b"+374 93 828222\n093 828222\n0037493828222\n07700 900123\n"
    code, plain, _ = _prepare(tmp_path, lines)
    assert code == 0
    assert plain["rows_valid"] == 2 and plain["rejected"] == {
        "empty": 0,
        "malformed": 2,
        "zero_id": 0,
    }
    assert plain["national_phones"] == 2
    code, am, _ = _prepare(tmp_path, lines, "--default-country", "AM")
    assert code == 0
    assert am["rows_valid"] == 4 and am["duplicates"] == 2
    assert am["national_phones"] == 0


def test_prepare_cli_suggests_default_country_for_malformed_phones(tmp_path: Path) -> None:
    source = tmp_path / "phones.txt"
    source.write_bytes(b"+374 93 828222\n093 828222\n12\n")
    run = subprocess.run(
        [sys.executable, "-m", "asyncsync", "prepare", str(source), "-o", str(tmp_path / "o"),
         "--id-type", "phone", "--workers", "1"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "1 phone number(s) were national numbers" in run.stderr
    assert "--default-country" in run.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "asyncsync", "prepare", str(source), "-o", str(tmp_path / "o2"),
         "--id-type", "phone", "--default-country", "XX"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "--default-country" in bad.stderr
