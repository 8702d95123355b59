"""protocol-audit: YAML rule packs judged against clinical session records on durable_rules."""

__version__ = "0.1.0"
