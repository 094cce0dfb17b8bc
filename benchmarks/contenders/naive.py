"""Contender: the naive end-to-end script.

What a careful engineer writes first, standard library only: one Python loop over the lines
(strip, lowercase, a regex for the UUID shape, the all-zero check, ``hashlib.sha256``, a ``set``
for dedupe) into one output file (``hash_lines`` also takes emails and phones, with the same
rules as asyncsync, for ``bench_prepare.py``); that file split on line boundaries into parts of
at most ``--max-file-bytes`` (TikTok's practical cap), each part's MD5; then each part uploaded
in turn with ``urllib`` (the multipart body built in memory, as ``requests`` would), and the
audience created from the file_paths.

    TIKTOK_ACCESS_TOKEN=... python naive.py --input IDS --work DIR --api-base URL \
        --advertiser-id ID --name NAME

Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ZERO = "00000000-0000-0000-0000-000000000000"
UPLOAD = "/open_api/v1.3/dmp/custom_audience/file/upload/"
CREATE = "/open_api/v1.3/dmp/custom_audience/create/"


def maid_rule() -> Callable[[str], str | None]:
    """Mobile IDs: trimmed, lowercased, the UUID shape, the all-zero ID dropped."""
    shape = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

    def rule(line: str) -> str | None:
        s = line.strip().lower()
        if not s or not shape.fullmatch(s) or s == ZERO:
            return None
        return s

    return rule


def email_rule() -> Callable[[str], str | None]:
    """Emails, asyncsync's rules written plainly: trimmed, spaces removed, lowercased, ``+tag``
    dropped; one ``@``, a non-empty local part, a dotted domain without empty labels."""
    bad = re.compile(r"[\s\x00-\x1f\x7f]")

    def rule(line: str) -> str | None:
        s = line.strip().replace(" ", "")
        if not s or bad.search(s) or s.count("@") != 1:
            return None
        local, domain = s.lower().split("@")
        local = local.split("+", 1)[0]
        if not local or "." not in domain or "" in domain.split("."):
            return None
        return f"{local}@{domain}"

    return rule


def phone_rule() -> Callable[[str], str | None]:
    """Phones, asyncsync's rules written plainly: digits only, ``+`` or ``00`` international,
    a single leading ``0`` (national, no country code) rejected, 7 to 15 digits."""
    allowed = re.compile(r"[0-9 +\-().]*")

    def rule(line: str) -> str | None:
        s = line.strip()
        if not s or not allowed.fullmatch(s):
            return None
        first = re.search(r"[0-9+]", s)
        plus = first is not None and first.group() == "+"
        digits = re.sub(r"[^0-9]", "", s)
        if not plus and digits.startswith("00"):
            digits = digits[2:]
        elif not plus and digits.startswith("0"):
            return None
        if digits.startswith("0") or not 7 <= len(digits) <= 15:
            return None
        return digits

    return rule


RULES: dict[str, Callable[[], Callable[[str], str | None]]] = {
    "maid": maid_rule,
    "email": email_rule,
    "phone": phone_rule,
}


def hash_lines(src: Path, out: Path, kind: str = "maid") -> tuple[int, int]:
    rule = RULES[kind]()
    seen: set[str] = set()
    rows = written = 0
    with src.open(encoding="utf-8-sig", errors="replace") as f, out.open("w") as o:
        for line in f:
            rows += 1
            s = rule(line)
            if s is None:
                continue
            h = hashlib.sha256(s.encode()).hexdigest()
            if h in seen:
                continue
            seen.add(h)
            o.write(h + "\n")
            written += 1
    return rows, written


def split(path: Path, work: Path, max_bytes: int) -> list[Path]:
    parts: list[Path] = []
    size = 0
    current = None
    with path.open("rb") as f:
        for line in f:
            if current is None or size + len(line) > max_bytes:
                if current is not None:
                    current.close()
                parts.append(work / f"part-{len(parts) + 1:05d}.txt")
                current = parts[-1].open("wb")
                size = 0
            current.write(line)
            size += len(line)
    if current is not None:
        current.close()
    return parts


# The HTTP modules are imported where they are used: bench_prepare.py times hash_lines in a
# process of its own, and that figure should not include loading an HTTP stack it never uses.


def post(url: str, token: str, body: bytes, content_type: str) -> dict[str, Any]:
    import urllib.request

    request = urllib.request.Request(
        url, data=body, headers={"Access-Token": token, "Content-Type": content_type}
    )
    with urllib.request.urlopen(request, timeout=600) as answer:
        envelope: dict[str, Any] = json.load(answer)
    if envelope.get("code") != 0:
        raise SystemExit(f"{url}: TikTok code {envelope.get('code')}: {envelope.get('message')}")
    data: dict[str, Any] = envelope["data"]
    return data


def upload(api_base: str, token: str, advertiser_id: str, part: Path) -> str:
    import uuid

    content = part.read_bytes()
    fields = {
        "advertiser_id": advertiser_id,
        "calculate_type": "FIRST_SHA256",
        "file_signature": hashlib.md5(content).hexdigest(),
    }
    boundary = uuid.uuid4().hex
    chunks = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    chunks.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{part.name}"\r\n'
        "Content-Type: text/plain\r\n\r\n".encode()
    )
    body = b"".join([*chunks, content, f"\r\n--{boundary}--\r\n".encode()])
    data = post(api_base + UPLOAD, token, body, f"multipart/form-data; boundary={boundary}")
    return str(data["file_path"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--api-base", required=True)
    parser.add_argument("--advertiser-id", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--max-file-bytes", type=int, default=50_000_000)
    args = parser.parse_args()
    token = os.environ["TIKTOK_ACCESS_TOKEN"]
    args.work.mkdir(parents=True, exist_ok=True)
    hashed = args.work / "hashed.txt"
    rows, written = hash_lines(args.input, hashed)
    parts = split(hashed, args.work, args.max_file_bytes)
    start = time.perf_counter()
    file_paths = [upload(args.api_base, token, args.advertiser_id, p) for p in parts]
    upload_s = time.perf_counter() - start
    body = json.dumps(
        {
            "advertiser_id": args.advertiser_id,
            "custom_audience_name": args.name,
            "file_paths": file_paths,
            "calculate_type": "FIRST_SHA256",
        }
    ).encode()
    created = post(args.api_base + CREATE, token, body, "application/json")
    print(
        json.dumps(
            {
                "audience_id": str(created["custom_audience_id"]),
                "rows_read": rows,
                "rows_written": written,
                "parts": len(parts),
                "bytes_uploaded": sum(p.stat().st_size for p in parts),
                "upload_s": upload_s,
            }
        )
    )


if __name__ == "__main__":
    main()
