"""The progress of an audit on a terminal: a bar of the bytes read of all the inputs with records/s
and the time left, then one of the judging when rules look at history, then the writing; nothing of
it when stderr is not a terminal (piped, or a CI log)."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = [str(p) for p in sorted((ROOT / "samples").glob("*.csv"))]


def on_a_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run the command line with its stderr on a pseudo-terminal; its exit code and what the terminal got."""
    master, slave = pty.openpty()
    run = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *args], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=slave, cwd=cwd)
    os.close(slave)
    got = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the other end closed
            break
        if not chunk:
            break
        got += chunk
    os.close(master)
    return run.wait(timeout=120), got.decode(errors="replace")


def _last_line(folder: Path) -> str:
    """The run's closing line, with the counts of the report it wrote."""
    summary = json.loads((folder / "r.json").read_text())["summary"]
    return (f"{summary['records_read']} records read, {summary['records_rejected']} rejected, "
            f"{summary['findings']} findings; wrote r.json")


def test_a_terminal_sees_reading_then_judging_then_writing(tmp_path: Path) -> None:
    code, seen = on_a_terminal(["audit", "--pack", "ketamine-iv", "--pack", "esketamine-rems", *SAMPLES,
                                "-o", "r.json"], tmp_path)
    assert code == 1, seen
    reading, judging, writing = (seen.find(word) for word in ("reading", "judging", "writing the reports"))
    assert 0 <= reading < judging < writing, seen
    read = json.loads((tmp_path / "r.json").read_text())["summary"]["records_read"]
    assert "100%" in seen[reading:judging] and f"{read:,} records" in seen[reading:judging]  # every byte and record
    assert "records, " in seen and "/s" in seen  # records and their rate beside the bar
    assert seen.rstrip().endswith(_last_line(tmp_path))


def test_nothing_of_it_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, str(ROOT / "cli.py"), "audit", "--pack", "ketamine-iv", "--pack",
                          "esketamine-rems", *SAMPLES, "-o", "r.json"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 1
    assert run.stderr == _last_line(tmp_path) + "\n"
