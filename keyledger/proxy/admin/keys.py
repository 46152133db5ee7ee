"""The admin app's typed keys, apart from the handlers so every admin module can read them."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from keyledger.proxy.admin.reads import ReadPool

__all__ = ["CONFIG_BASE", "EXPECTED_AUTHORIZATION", "JOURNAL_DIR", "READS"]

JOURNAL_DIR = web.AppKey("journal_dir", Path)
READS = web.AppKey("admin_reads", ReadPool)
# The config file's folder: policy files are named from there, as the operator wrote them.
CONFIG_BASE = web.AppKey("config_base", Path)
# ``Bearer <admin token>``, as the Authorization header must carry it.
EXPECTED_AUTHORIZATION = web.AppKey("expected_authorization", bytes)
