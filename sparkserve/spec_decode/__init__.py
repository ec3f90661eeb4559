"""Speculative decoding: drafters (proposers), heads, verification, verify-length planning."""
