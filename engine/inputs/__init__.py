"""Exports in: binding files to record types, reading CSV / JSON / NDJSON losslessly, converting
cells to typed values, and accounting for every row read or rejected."""
