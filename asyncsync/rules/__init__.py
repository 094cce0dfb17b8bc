"""Pure rules: ID kinds, normalization, hashing and TikTok's limits. No I/O, no asyncio."""
