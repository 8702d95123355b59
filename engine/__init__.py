"""protocol-audit: YAML rule packs judged against clinical session records on durable_rules.

The public API: ``load_packs`` (files, folders or shipped pack names -> checked packs),
``run`` (packs and input files -> result and per-input counts), ``build_report`` (the report
every format renders from) and ``reporters`` (one ``render(report, out)`` per format).

The packages follow the data: ``language`` (packs and their rule language), ``inputs`` (exports
read into records), ``judge`` (records judged by durable_rules, every answer checked), ``reporters``
(the report and its formats), ``commands`` (test, explain, diff, output files).
"""

from __future__ import annotations

import importlib
from typing import Any

from engine.version import __version__

# Loaded on first use: a module deep in the house (the engine worker's) need not import the rest.
_API = {"load_pack": ("engine.packs", "load_pack"), "load_packs": ("engine.packs", "load_packs"),
        "judge": ("engine.judge.pipeline", "judge"), "run": ("engine.judge.pipeline", "run"),
        "build_report": ("engine.reporters.report", "build")}

__all__ = ["__version__", "build_report", "judge", "load_pack", "load_packs", "run"]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'engine' has no attribute '{name}'")
    module, attribute = _API[name]
    return getattr(importlib.import_module(module), attribute)
