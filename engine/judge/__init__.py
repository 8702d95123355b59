"""Judging: packs compiled for durable_rules, records encoded as facts, history answered from each
patient's timeline, the engine driven in a worker process, and every answer checked in Python."""
