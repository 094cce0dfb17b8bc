"""The sandbox's upload endpoint: TikTok's multipart fields, MD5, suffixes, size cap, parsing."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import aiohttp
import pytest
from helpers.api import ADVERTISER, UPLOAD
from helpers.ids import digest_file, md5_digests, sha256_digests
from helpers.sandbox import RawApi

from asyncsync.sandbox import Sandbox


async def test_upload_answers_an_opaque_file_path_in_the_envelope(raw_api: RawApi) -> None:
    answer = await raw_api.upload(digest_file(sha256_digests("a", 5)))
    assert answer["code"] == 0 and answer["message"] == "OK"
    path = answer["data"]["file_path"]
    assert isinstance(path, str) and len(path) >= 8
    entry = raw_api.sandbox.state.files[path]
    assert entry.matched == 5 and entry.advertiser_id == ADVERTISER


async def test_upload_with_a_wrong_md5_is_refused_with_40900(raw_api: RawApi) -> None:
    content = digest_file(sha256_digests("a", 5))
    answer = await raw_api.upload(content, signature=hashlib.md5(content + b"x").hexdigest())
    assert answer["code"] == 40900
    assert raw_api.sandbox.state.files == {}


async def test_upload_accepts_an_uppercase_md5_signature(raw_api: RawApi) -> None:
    content = digest_file(sha256_digests("a", 5))
    answer = await raw_api.upload(content, signature=hashlib.md5(content).hexdigest().upper())
    assert answer["code"] == 0


@pytest.mark.parametrize("filename", ["ids.csv.gz", "ids.CSV", "ids.zip", "ids", "ids.tsv"])
async def test_upload_refuses_a_file_name_not_ending_exactly_in_csv_or_txt_with_40908(
    raw_api: RawApi, filename: str
) -> None:
    answer = await raw_api.upload(digest_file(sha256_digests("a", 5)), filename=filename)
    assert answer["code"] == 40908
    assert ".csv or .txt" in answer["message"]


async def test_upload_accepts_a_txt_file(raw_api: RawApi) -> None:
    answer = await raw_api.upload(digest_file(sha256_digests("a", 5)), filename="part-1.txt")
    assert answer["code"] == 0


async def test_upload_refuses_an_unknown_calculate_type(raw_api: RawApi) -> None:
    answer = await raw_api.upload(b"x\n", calculate_type="SHA1")
    assert answer["code"] == 40002 and "calculate_type" in answer["message"]


async def test_upload_accepts_maid_alias_and_folds_it_to_first(raw_api: RawApi) -> None:
    path = await raw_api.upload_path(sha256_digests("a", 3), calculate_type="MAID_SHA256")
    entry = raw_api.sandbox.state.files[path]
    assert entry.calculate_type == "FIRST_SHA256"
    assert entry.uploaded_calculate_type == "MAID_SHA256"


async def test_upload_over_the_size_cap_is_40907_file_too_large(
    sandbox_factory: Callable[..., AbstractAsyncContextManager[Sandbox]],
) -> None:
    async with sandbox_factory(max_file_bytes=1000) as sb, aiohttp.ClientSession() as session:
        api = RawApi(session, sb, sb.issue_token())
        small = await api.upload(b"a" * 1000)
        big = await api.upload(b"a" * 1001)
    assert small["code"] == 0
    assert big["code"] == 40907 and "1000 bytes" in big["message"]


async def test_upload_counts_only_hex_digests_of_the_type_length(raw_api: RawApi) -> None:
    good = sha256_digests("good", 4)
    content = "\n".join(
        [
            "sha256",  # a header: ignored
            good[0].upper(),  # uppercase hex: matched, stored lowercase
            f"  {good[1]}  ",  # surrounding blanks: matched
            good[2] + "\r",  # CRLF line end: matched
            good[3][:-1],  # too short: ignored
            md5_digests("m", 1)[0],  # an MD5 in a SHA256 file: ignored
            "5f3a2b18-9c4d-4e7f-b8e2-17d3a1e69b25",  # raw ID: unmatched
            good[3],  # last line without newline: matched
        ]
    ).encode()
    answer = await raw_api.upload(content)
    assert answer["code"] == 0
    entry = raw_api.sandbox.state.files[answer["data"]["file_path"]]
    assert {d.hex() for d in entry.members()} == set(good)
    assert entry.lines == 8


async def test_upload_of_md5_digests_matches_32_character_lines(raw_api: RawApi) -> None:
    digests = md5_digests("m", 10)
    content = digest_file(digests + sha256_digests("s", 2))
    answer = await raw_api.upload(content, calculate_type="FIRST_MD5")
    entry = raw_api.sandbox.state.files[answer["data"]["file_path"]]
    assert {d.hex() for d in entry.members()} == set(digests)
    assert entry.digest_size == 16


async def test_upload_leaves_no_spooled_bytes_behind(raw_api: RawApi, sandbox: Sandbox) -> None:
    await raw_api.upload_path(sha256_digests("a", 100))
    await raw_api.upload(b"abc", signature="0" * 32)
    assert sandbox._spool is not None
    assert list(sandbox._spool.iterdir()) == []


async def test_upload_without_a_file_or_signature_names_the_missing_field(
    raw_api: RawApi,
) -> None:
    form = aiohttp.FormData()
    form.add_field("advertiser_id", ADVERTISER)
    form.add_field("calculate_type", "FIRST_SHA256")
    form.add_field("file_signature", "0" * 32)
    async with raw_api.session.post(
        raw_api.sandbox.api_base + UPLOAD, data=form, headers=raw_api.headers(None)
    ) as response:
        answer = await response.json()
    assert answer["code"] == 40002 and "file" in answer["message"]
    no_sig = await raw_api.upload(b"abc", signature="")
    assert no_sig["code"] == 40002 and "file_signature" in no_sig["message"]


async def test_upload_of_several_megabytes_streams_in_chunks(raw_api: RawApi) -> None:
    digests = sha256_digests("big", 60_000)  # about 3.9 MB
    path = await raw_api.upload_path(digests)
    entry = raw_api.sandbox.state.files[path]
    assert entry.matched == 60_000
    assert entry.size_bytes == len(digest_file(digests))
