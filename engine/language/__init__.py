"""The rule language: pack YAML read with positions, the pack schema and condition grammar, the
operator table, derive expressions, RE2 patterns, typed values and the model packs become.

Nothing here reads an export or runs the engine; everything above builds on it.
"""
