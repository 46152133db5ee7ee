"""The web console's files: HTML, JavaScript modules and CSS, served by the admin listener
under ``/ui/`` (see :mod:`keyledger.proxy.admin.console`). Hand-written, no build step:
what is here is what the browser runs."""

from __future__ import annotations

from pathlib import Path

__all__ = ["STATIC"]

STATIC = Path(__file__).resolve().parent / "static"
