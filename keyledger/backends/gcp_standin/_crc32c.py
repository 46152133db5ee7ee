"""CRC32C (Castagnoli), the checksum Secret Manager puts on every payload.

``google-crc32c`` is not among keyledger's dependencies (the SDK does not require it), and
payloads are at most 64 KiB, so a table-driven pure-Python version is quick enough here.
"""

from __future__ import annotations

__all__ = ["crc32c"]

_POLYNOMIAL = 0x82F63B78  # the reflected Castagnoli polynomial


def _table() -> tuple[int, ...]:
    rows = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _POLYNOMIAL if crc & 1 else crc >> 1
        rows.append(crc)
    return tuple(rows)


_TABLE = _table()


def crc32c(data: bytes) -> int:
    """The CRC32C of ``data`` as an unsigned 32-bit integer."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
