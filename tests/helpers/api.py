"""The TikTok API as tests address it: one advertiser, the endpoint paths (written out here, not
taken from the client: a test of the client must not share its mistakes)."""

from __future__ import annotations

from typing import Final

ADVERTISER: Final = "7000000000000000001"
"""The advertiser every test acts for (the sandbox's any-advertiser token accepts every ID)."""
PREFIX: Final = "/open_api/v1.3"
UPLOAD: Final = f"{PREFIX}/dmp/custom_audience/file/upload/"
CREATE: Final = f"{PREFIX}/dmp/custom_audience/create/"
UPDATE: Final = f"{PREFIX}/dmp/custom_audience/update/"
LIST: Final = f"{PREFIX}/dmp/custom_audience/list/"
