"""protocol-audit: YAML rule packs judged against clinical session records on durable_rules.

The public API: ``load_packs`` (files, folders or shipped pack names -> checked packs),
``run`` (packs and input files -> result and per-input counts), ``build_report`` (the report
dict every format renders from) and ``reporters`` (one ``render(report, out)`` per format).
"""

__version__ = "0.1.0"

from .packs import load_pack, load_packs  # noqa: E402
from .pipeline import judge, run  # noqa: E402
from .report import build as build_report  # noqa: E402

__all__ = ["__version__", "build_report", "judge", "load_pack", "load_packs", "run"]
