"""Finding and loading packs: a YAML file, a folder of them, or the name of a shipped pack."""

from __future__ import annotations

import difflib
import functools
import sys
from pathlib import Path

from engine import gitrefs
from engine.errors import PackError, UsageError
from engine.inputs.files import special_file
from engine.judge.compiler import compile_rules
from engine.judge.facts import Layout
from engine.language.loader import DuplicateKeys, decode_pack, load_yaml
from engine.language.model import Pack
from engine.language.schema import build_pack

PACK_SUFFIXES = (".yaml", ".yml")
TESTS_STEM = ".tests"  # ketamine-iv.tests.yaml holds the scenarios of ketamine-iv.yaml, not a pack


def is_tests_path(name: str) -> bool:
    """A scenario file: ``<pack>.tests.yaml``, or a YAML file in a ``<pack>.tests/`` folder."""
    path = Path(name)
    return path.suffix in PACK_SUFFIXES and (path.stem.endswith(TESTS_STEM) or path.parent.name.endswith(TESTS_STEM))


def orphan_tests(folder: Path) -> list[Path]:
    """Scenario files and folders in ``folder`` with no pack of their name beside them."""
    stems = {p.stem for p in folder.iterdir() if is_pack_file(p)}
    found = [p for p in folder.iterdir() if (p.is_dir() and p.name.endswith(TESTS_STEM))
             or (p.is_file() and p.suffix in PACK_SUFFIXES and p.stem.endswith(TESTS_STEM))]
    return sorted(p for p in found if (p.name if p.is_dir() else p.stem).removesuffix(TESTS_STEM) not in stems)


def is_pack_name(name: str) -> bool:
    """A pack's file name: YAML, and not a scenario file (``<pack>.tests.yaml``)."""
    path = Path(name)
    return path.suffix in PACK_SUFFIXES and not path.stem.endswith(TESTS_STEM)


def is_pack_file(path: Path) -> bool:
    return is_pack_name(path.name) and path.is_file()


def shipped_dirs() -> list[Path]:
    """Where shipped packs live: the source tree's rules/, or the installed copy under sys.prefix."""
    return [Path(__file__).resolve().parent.parent / "rules", Path(sys.prefix) / "share" / "protocol-audit" / "rules"]


def shipped_packs() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in shipped_dirs():
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if is_pack_file(path):
                    found.setdefault(path.stem, path)
    return found


def resolve(ref: str) -> list[str]:
    """The pack files ``ref`` names: a file, every YAML file of a folder, or a shipped pack's name."""
    path = Path(ref)
    if path.is_dir():
        files = sorted(str(p) for p in path.iterdir() if is_pack_file(p))
        if not files:
            raise UsageError(f"{ref}: folder holds no .yaml pack")
        return files
    if path.is_file():
        if is_tests_path(ref) and path.stem.endswith(TESTS_STEM):
            raise UsageError(f"{ref} is a scenario file (the tests of {path.stem.removesuffix(TESTS_STEM)}"
                             f"{path.suffix}), not a pack: give the pack, its scenarios are found beside it")
        return [ref]
    kind = special_file(ref)
    if kind is not None:
        raise UsageError(f"{ref}: not a regular file ({kind}); a pack is a YAML file")
    shipped = shipped_packs()
    if ref in shipped:
        return [str(shipped[ref])]
    close = difflib.get_close_matches(ref, list(shipped), n=1)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    names = ", ".join(shipped) or "none"
    raise UsageError(f'{ref}: no such pack file, folder or shipped pack{hint}; shipped packs: {names}')


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read pack ({exc.strerror or exc})") from None


def load_pack(path: str) -> Pack:
    """Load and check one pack file; PackError lists every problem."""
    return load_pack_bytes(_read(path), path)


def load_pack_bytes(data: bytes, label: str) -> Pack:
    """A pack from its bytes (e.g. read from git); ``label`` names it in every problem."""
    try:
        tree = load_yaml(decode_pack(data, label), label)
    except DuplicateKeys as duplicates:
        try:
            build_pack(duplicates.tree, label, data)
        except PackError as exc:
            raise PackError(duplicates.problems + exc.problems) from None
        raise
    return build_pack(tree, label, data)


def load_packs(refs: list[str]) -> list[Pack]:
    """Load every pack the references name (files, folders, shipped names, ``git:REV:PATH``),
    collecting the problems of all of them."""
    packs: list[Pack] = []
    problems = []
    for ref in refs:
        if gitrefs.is_git_ref(ref):
            sources = gitrefs.pack_sources(ref, is_pack_name)
        else:
            sources = [(path, functools.partial(_read, path)) for path in resolve(ref)]
        for label, read in sources:
            try:
                pack = load_pack_bytes(read(), label)
                # what validate accepts, the engine must run: its limits are checked here
                compile_rules(list(pack.rules), Layout(pack.records, list(pack.rules)))
                packs.append(pack)
            except PackError as exc:
                problems.extend(exc.problems)
    if problems:
        raise PackError(problems)
    ids: dict[str, str] = {}
    for pack in packs:
        if pack.id in ids:
            raise UsageError(f'pack "{pack.id}" is given twice ({ids[pack.id]} and {pack.path})')
        ids[pack.id] = pack.path
    return packs
