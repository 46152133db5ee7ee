"""The admin app's typed keys, apart from the handlers so every admin module can read them."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from keyledger.proxy.admin_reads import ReadPool

__all__ = ["EXPECTED_AUTHORIZATION", "JOURNAL_DIR", "READS"]

JOURNAL_DIR = web.AppKey("journal_dir", Path)
READS = web.AppKey("admin_reads", ReadPool)
# ``Bearer <admin token>``, as the Authorization header must carry it.
EXPECTED_AUTHORIZATION = web.AppKey("expected_authorization", bytes)
