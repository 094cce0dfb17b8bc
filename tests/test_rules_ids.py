"""The normalization rules of docs/normalization.md, each with its test vector."""

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncsync.rules.ids import Reject, hash_id, normalize
from asyncsync.rules.limits import CalculateType, calculate_type


def sha(s: bytes) -> str:
    return hashlib.sha256(s).hexdigest()


def test_maid_vector_is_trimmed_lowercased_and_hashes_to_83dc3f5f() -> None:
    out = normalize(b"  5F3A2B18-9C4D-4E7F-B8E2-17D3A1E69B25\r", "maid")
    assert out == b"5f3a2b18-9c4d-4e7f-b8e2-17d3a1e69b25"
    assert isinstance(out, bytes)
    assert hash_id(out, "maid", "sha256").startswith(b"83dc3f5f")


def test_email_vector_drops_plus_tag_and_hashes_to_d6117306() -> None:
    out = normalize(b" JaneDoe+news@Gmail.com ", "email")
    assert out == b"janedoe@gmail.com"
    assert isinstance(out, bytes)
    assert sha(out).startswith("d6117306")


def test_phone_vector_keeps_digits_only_and_hashes_to_65b7e6dc() -> None:
    out = normalize(b"+374 (93) 82-82-22", "phone")
    assert out == b"37493828222"
    assert isinstance(out, bytes)
    assert sha(out).startswith("65b7e6dc")
    assert normalize(b"0037493828222", "phone") == b"37493828222"


def test_email_spaces_inside_are_removed() -> None:
    assert normalize(b" Jane Doe+news @ Gmail .com ", "email") == b"janedoe@gmail.com"


def test_phone_international_prefixes_and_bare_digits_carry_the_country_code() -> None:
    assert normalize(b"00 44 7700 900123", "phone") == b"447700900123"
    assert normalize(b"(+44) 7700 900123", "phone") == b"447700900123"
    assert normalize(b"447700900123", "phone") == b"447700900123"


@pytest.mark.parametrize(
    ("line", "kind", "reason"),
    [
        (b"", "maid", Reject.EMPTY),
        (b"   \t", "email", Reject.EMPTY),
        (b"00000000-0000-0000-0000-000000000000", "maid", Reject.ZERO_ID),
        (b"5f3a2b18-9c4d-4e7f-b8e2-17d3a1e69b2", "maid", Reject.MALFORMED),
        (b"5f3a2b189c4d4e7fb8e217d3a1e69b25", "maid", Reject.MALFORMED),
        (b"5f3a2b18-9c4d-4e7f-b8e2-17d3a1e69bzz", "maid", Reject.MALFORMED),
        (b"user@.com", "email", Reject.MALFORMED),
        (b"user@com", "email", Reject.MALFORMED),
        (b"@gmail.com", "email", Reject.MALFORMED),
        (b"+tag@gmail.com", "email", Reject.MALFORMED),
        (b"a@b@c.com", "email", Reject.MALFORMED),
        (b"jane\tdoe@gmail.com", "email", Reject.MALFORMED),
        (b"jane@gmail..com", "email", Reject.MALFORMED),
        (b"\xff\xfe@x.com", "email", Reject.MALFORMED),
        (b"123456", "phone", Reject.MALFORMED),
        (b"1234567890123456", "phone", Reject.MALFORMED),
        (b"555-CALL-NOW", "phone", Reject.MALFORMED),
        (b"07700 900123", "phone", Reject.MALFORMED),
        (b"+0 7700 900123", "phone", Reject.MALFORMED),
        (b"000 7700 900123", "phone", Reject.MALFORMED),
        (b"ab" * 31, "sha256", Reject.MALFORMED),
        (b"g" * 64, "sha256", Reject.MALFORMED),
        (b"A" * 31, "md5", Reject.MALFORMED),
    ],
)
def test_rejects_name_their_reason(line: bytes, kind: str, reason: Reject) -> None:
    assert normalize(line, kind) == reason


def test_hashed_input_is_lowercased_and_passed_through() -> None:
    digest = "AB" * 32
    out = normalize(digest.encode(), "sha256")
    assert out == digest.lower().encode()
    assert isinstance(out, bytes)
    assert hash_id(out, "sha256", "sha256") == out


@pytest.mark.parametrize(
    ("kind", "algo", "expected"),
    [
        ("auto", "sha256", CalculateType.FIRST_SHA256),
        ("maid", "md5", CalculateType.FIRST_MD5),
        ("email", "sha256", CalculateType.EMAIL_SHA256),
        ("phone", "sha256", CalculateType.PHONE_SHA256),
        ("sha256", "sha256", CalculateType.FIRST_SHA256),
        ("md5", "md5", CalculateType.FIRST_MD5),
    ],
)
def test_calculate_type_follows_id_type_and_hash(
    kind: str, algo: str, expected: CalculateType
) -> None:
    assert calculate_type(kind, algo) is expected


@pytest.mark.parametrize(("kind", "algo"), [("email", "md5"), ("phone", "md5"), ("sha256", "md5")])
def test_calculate_type_refuses_combinations_tiktok_rejects(kind: str, algo: str) -> None:
    with pytest.raises(ValueError, match=kind):
        calculate_type(kind, algo)


@given(st.binary(max_size=80), st.sampled_from(["maid", "email", "phone", "sha256", "md5"]))
def test_normalize_is_idempotent(line: bytes, kind: str) -> None:
    once = normalize(line, kind)
    if isinstance(once, bytes):
        assert normalize(once, kind) == once
