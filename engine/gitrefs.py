"""Pack references into git, ``git:REV:PATH``: a pack file or a folder of packs as it was at REV.

CI compares a change with the merge base this way (``protocol-audit diff --base git:$base:rules/``).
PATH is relative to the working directory (``git show REV:./PATH``).
"""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Callable
from pathlib import PurePosixPath

from engine.errors import UsageError

PREFIX = "git:"


def is_git_ref(ref: str) -> bool:
    return ref.startswith(PREFIX)


def _git(*args: str) -> bytes:
    try:
        done = subprocess.run(["git", *args], capture_output=True, check=False, timeout=60)
    except FileNotFoundError:
        raise UsageError("git is not installed: a git: pack reference needs it") from None
    except subprocess.TimeoutExpired:
        raise UsageError(f"git {' '.join(args)} did not answer in 60 s") from None
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise UsageError(f"git {' '.join(args)}: {reason[0] if reason else f'exit {done.returncode}'}")
    return done.stdout


def pack_sources(ref: str, is_pack_name: Callable[[str], bool]) -> list[tuple[str, Callable[[], bytes]]]:
    """The packs ``git:REV:PATH`` names, each as (label for problems, a reader of its bytes): the
    file, or every file of the folder whose name ``is_pack_name`` accepts."""
    rev, sep, path = ref[len(PREFIX):].partition(":")
    if not sep or not rev or not path:
        raise UsageError(f'"{ref}": a git pack reference is git:REVISION:PATH, e.g. git:origin/main:rules/')
    if path.startswith("/"):
        raise UsageError(f'"{ref}": give the path relative to the working directory, not absolute')
    if rev.startswith("-"):
        raise UsageError(f'"{ref}": a revision cannot start with "-"')
    path = path.removeprefix("./")
    spec = f"{rev}:./{path}"
    kind = _git("cat-file", "-t", "--end-of-options", spec).decode().strip()
    if kind == "blob":
        names = [path]
    elif kind == "tree":
        # -z: names as they are (without it git quotes non-ASCII names, and they would not match)
        listed = [n for n in _git("ls-tree", "-z", "--name-only", "--end-of-options", spec)
                  .decode("utf-8", "replace").split("\0") if n]
        names = [str(PurePosixPath(path) / name) for name in sorted(listed) if is_pack_name(name)]
        if not names:
            raise UsageError(f'"{ref}": folder holds no .yaml pack at {rev}')
    else:
        raise UsageError(f'"{ref}": {path} is a {kind} at {rev}, not a pack file or folder')
    return [(f"{PREFIX}{rev}:{name}", functools.partial(_git, "show", "--end-of-options", f"{rev}:./{name}"))
            for name in names]
