"""Reports are written whole or not at all and never over an input; a run stopped by a signal, a
closed pipe or a full disk ends cleanly; terminal messages show control characters, never obey them."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cli import main
from engine import reporters
from engine.commands import console
from engine.commands import run as commands
from engine.errors import EngineError
from engine.judge import durable
from engine.reporters import diff_report

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "audit"
AS_OF = "2026-11-26T00:00:00+00:00"
PREVIOUS = "the previous report\n"
ON_LINUX = Path("/proc/self/stat").exists()


def run(*args: str, color: bool = False) -> tuple[int, str, str]:
    """The command through click's runner; ``color=True`` keeps escape sequences as a terminal gets them."""
    result = CliRunner().invoke(main, list(args), color=color)
    return result.exit_code, result.stdout, result.stderr


def command(*args: str) -> list[str]:
    """The command as a process of its own, from this checkout."""
    return [sys.executable, str(ROOT / "cli.py"), *args]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with the golden export and pack, as the current directory."""
    shutil.copy(GOLDEN / "sessions.csv", tmp_path)
    shutil.copy(GOLDEN / "pack.yaml", tmp_path)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def packs_loaded(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every load_packs call of the command: a run refused before anything is read makes none."""
    calls: list[list[str]] = []
    real = commands.load_packs

    def load(refs: list[str]) -> Any:
        calls.append(refs)
        return real(refs)

    monkeypatch.setattr(commands, "load_packs", load)
    return calls


def names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


AUDIT = ["audit", "--pack", "pack.yaml", "sessions.csv", "--as-of", AS_OF]
DIFF = ["diff", "--base", "pack.yaml", "--head", "pack.yaml", "sessions.csv", "--as-of", AS_OF]


# 1. An output never replaces an input, nor another output.

@pytest.mark.parametrize("files, output, setup, message", [
    (["sessions.csv"], "sessions.csv", None, "cannot write sessions.csv: it is the input sessions.csv"),
    (["sessions.csv"], "sub/../sessions.csv", None, "cannot write sub/../sessions.csv: it is the input sessions.csv"),
    (["./sessions.csv"], "copy.csv", lambda: os.link("sessions.csv", "copy.csv"),
     "cannot write copy.csv: it is the input ./sessions.csv"),
    (["sessions.csv"], "link.csv", lambda: os.symlink("sessions.csv", "link.csv"),
     "cannot write link.csv: it is the input sessions.csv"),
    (["session=sessions.csv"], "sessions.csv", None, "cannot write sessions.csv: it is the input sessions.csv"),
], ids=["same-spelling", "other-spelling", "hard-link", "symlink", "type-binding"])
def test_an_output_naming_an_input_is_refused_before_anything_is_read(
        workdir: Path, packs_loaded: list[list[str]], files: list[str], output: str,
        setup: Callable[[], None] | None, message: str) -> None:
    if setup:
        setup()
    before = (workdir / "sessions.csv").read_bytes()
    code, stdout, stderr = run("audit", "--pack", "pack.yaml", *files, "-o", output)
    assert (code, stdout, stderr) == (2, "", f"protocol-audit: {message}\n")
    assert (workdir / "sessions.csv").read_bytes() == before
    assert packs_loaded == []


def test_an_output_naming_the_key_file_is_refused(workdir: Path, packs_loaded: list[list[str]]) -> None:
    key = workdir / "key.txt"
    key.write_text("a pseudonym key of some length\n")
    code, _, stderr = run(*AUDIT, "--key-file", "key.txt", "-o", "key.txt")
    assert (code, stderr) == (2, "protocol-audit: cannot write key.txt: it is the key file key.txt\n")
    assert key.read_text() == "a pseudonym key of some length\n"
    assert packs_loaded == []


def test_an_output_naming_a_map_is_refused_and_called_a_map(workdir: Path, packs_loaded: list[list[str]]) -> None:
    Path("clinic.map.json").write_text('{"map": "clinic", "version": "1", "inputs": [{"type": "session"}]}')
    code, _, stderr = run(*AUDIT, "--map", "clinic.map.json", "-o", "clinic.map.json")
    assert (code, stderr) == (2, "protocol-audit: cannot write clinic.map.json: it is the map clinic.map.json\n")
    assert packs_loaded == []


def test_an_output_in_a_folder_that_is_a_file_says_so(workdir: Path) -> None:
    code, _, stderr = run(*AUDIT, "-o", "sessions.csv/r.json")
    assert (code, stderr) == (2, "protocol-audit: sessions.csv/r.json: folder sessions.csv is a file, not a folder\n")


def test_a_diff_output_naming_an_input_is_refused(workdir: Path, packs_loaded: list[list[str]]) -> None:
    shutil.copy("sessions.csv", "export.json")
    before = Path("export.json").read_bytes()
    code, _, stderr = run("diff", "--base", "pack.yaml", "--head", "pack.yaml", "session=export.json",
                          "-o", "./export.json")
    assert (code, stderr) == (2, "protocol-audit: cannot write ./export.json: it is the input export.json\n")
    assert Path("export.json").read_bytes() == before


@pytest.mark.parametrize("first, second, setup", [
    ("r.json", "r.json", None),
    ("r.json", "sub/../r.json", None),
    ("r.json", "link.json", lambda: os.symlink("r.json", "link.json")),  # dangling: r.json is not there yet
    ("r.json", "link.json", lambda: (Path("r.json").write_text(PREVIOUS), os.symlink("r.json", "link.json"))),
], ids=["same-spelling", "other-spelling", "symlink-to-new-file", "symlink-to-existing-file"])
def test_two_outputs_naming_one_file_are_refused(workdir: Path, packs_loaded: list[list[str]], first: str,
                                                 second: str, setup: Callable[[], Any] | None) -> None:
    if setup:
        setup()
    before = names(workdir)
    code, _, stderr = run(*AUDIT, "-o", first, "-o", second)
    assert (code, stderr) == (2, f"protocol-audit: cannot write {second}: -o {first} names the same file\n")
    assert names(workdir) == before
    assert packs_loaded == []


# 2. and 5. Every output is written, or none is; I/O errors are reported as such.

def _failing(report: dict[str, Any], out: Any, **options: Any) -> None:
    out.write("the first half of a report")
    raise ValueError("a renderer bug")


def _disk_full(report: dict[str, Any], out: Any, **options: Any) -> None:
    out.write("the first half of a report")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _interrupted(report: dict[str, Any], out: Any, **options: Any) -> None:
    out.write("the first half of a report")
    raise KeyboardInterrupt


def _fail_markdown(monkeypatch: pytest.MonkeyPatch, render: Callable[..., None]) -> None:
    """Markdown, the last output of the command, fails in both commands' renderers."""
    monkeypatch.setitem(reporters.FORMATS, "md", render)
    monkeypatch.setattr(diff_report, "render_markdown", render)


@pytest.mark.parametrize("render, message", [
    (_failing, "internal error: ValueError: a renderer bug (set PROTOCOL_AUDIT_DEBUG=1 for details)"),
    (_disk_full, "cannot write r.md: no space left on device; no report was written"),
    (_interrupted, "interrupted; no report was written"),
], ids=["renderer-bug", "disk-full", "interrupt"])
@pytest.mark.parametrize("args", [AUDIT, DIFF], ids=["audit", "diff"])
def test_a_failed_output_leaves_every_output_as_it_was(workdir: Path, monkeypatch: pytest.MonkeyPatch,
                                                       args: list[str], render: Callable[..., None],
                                                       message: str) -> None:
    (workdir / "r.json").write_text(PREVIOUS)
    _fail_markdown(monkeypatch, render)
    code, _, stderr = run(*args, "-o", "r.json", "-o", "r.md")
    assert (code, stderr) == (2, f"protocol-audit: {message}\n")
    assert names(workdir) == ["pack.yaml", "r.json", "sessions.csv", "sub"]  # no r.md, no temporary file
    assert (workdir / "r.json").read_text() == PREVIOUS


def test_an_interrupt_while_renaming_says_what_was_written(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C right after the first rename: the message and the disk must agree."""
    (workdir / "r.json").write_text(PREVIOUS)
    (workdir / "r.csv").write_text(PREVIOUS)
    real_replace = os.replace

    def replace_then_interrupt(source: Any, target: Any) -> None:
        real_replace(source, target)
        os.replace = real_replace  # once
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(os, "replace", replace_then_interrupt)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # even where the run ignores Ctrl-C
    try:
        code, _, stderr = run(*AUDIT, "-o", "r.json", "-o", "r.csv")
    finally:
        signal.signal(signal.SIGINT, previous)
    replaced = [name for name in ("r.json", "r.csv") if (workdir / name).read_text() != PREVIOUS]
    left = [name for name in ("r.json", "r.csv") if name not in replaced]
    assert code == 2
    if not left:
        assert stderr == "protocol-audit: interrupted; wrote r.json, r.csv\n"
    else:
        assert stderr == f"protocol-audit: interrupted; wrote {', '.join(replaced)}; {left[0]} was not written\n"
    assert not [name for name in names(workdir) if name.endswith(".tmp")]


def test_sigterm_while_writing_cleans_up_like_ctrl_c(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (workdir / "r.json").write_text(PREVIOUS)

    def terminated(report: dict[str, Any], out: Any, **options: Any) -> None:
        out.write("the first half of a report")
        os.kill(os.getpid(), signal.SIGTERM)

    def unhandled(signum: int, frame: Any) -> None:  # so that without the fix this test fails, not pytest
        raise RuntimeError("SIGTERM reached the default handler")

    _fail_markdown(monkeypatch, terminated)
    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        code, _, stderr = run(*AUDIT, "-o", "r.json", "-o", "r.md")
        assert signal.getsignal(signal.SIGTERM) is unhandled  # the command put it back
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert (code, stderr) == (2, "protocol-audit: terminated; no report was written\n")
    assert names(workdir) == ["pack.yaml", "r.json", "sessions.csv", "sub"]
    assert (workdir / "r.json").read_text() == PREVIOUS


@pytest.mark.parametrize("output, message", [
    ("out.json", "cannot write out.json: is a directory"),
    ("sub", 'cannot tell the report format of "sub" from its extension'),
], ids=["directory-with-an-extension", "directory"])
def test_a_directory_as_output_is_refused_before_anything_is_read(workdir: Path, packs_loaded: list[list[str]],
                                                                  output: str, message: str) -> None:
    (workdir / "out.json").mkdir()
    code, _, stderr = run(*AUDIT, "-o", "r.csv", "-o", output)
    assert code == 2 and stderr.startswith(f"protocol-audit: {message}")
    assert packs_loaded == []
    assert names(workdir) == ["out.json", "pack.yaml", "sessions.csv", "sub"]


def test_a_folder_without_write_permission_is_refused_before_anything_is_read(
        workdir: Path, packs_loaded: list[list[str]]) -> None:
    locked = workdir / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            # root (as in the project's test container) writes anyway: the read-only mount test
            # below checks the same message on a folder nobody can write to
            pytest.skip("permissions do not bind this user (root)")
        code, _, stderr = run(*AUDIT, "-o", "locked/r.json")
    finally:
        locked.chmod(0o755)
    assert (code, stderr) == (2, "protocol-audit: cannot write locked/r.json: permission denied\n")
    assert packs_loaded == [] and names(locked) == []


@pytest.fixture
def tmpfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Path]]:
    """Mount a tmpfs with the given options (root on Linux only; else the test is skipped)."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        if not ON_LINUX or os.geteuid() != 0 or not shutil.which("mount"):
            pytest.skip("mounting a tmpfs needs root on Linux")
        point = tmp_path_factory.mktemp("mount")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], check=False)


def test_a_read_only_folder_is_refused_before_anything_is_read(
        workdir: Path, packs_loaded: list[list[str]], tmpfs: Callable[[str], Path]) -> None:
    folder = tmpfs("ro,size=64k")
    code, _, stderr = run(*AUDIT, "-o", "r.csv", "-o", f"{folder}/r.json")
    assert (code, stderr) == (2, f"protocol-audit: cannot write {folder}/r.json: read-only file system\n")
    assert packs_loaded == []
    assert names(workdir) == ["pack.yaml", "sessions.csv", "sub"]


def test_a_full_disk_is_reported_and_leaves_no_file(workdir: Path, tmpfs: Callable[[str], Path]) -> None:
    folder = tmpfs("size=4k")  # one page: the CSV report (1 KB) fits, the JSON one (6 KB) does not
    code, _, stderr = run(*AUDIT, "-o", f"{folder}/r.csv", "-o", f"{folder}/r.json")
    assert (code, stderr) == (2, f"protocol-audit: cannot write {folder}/r.json: no space left on device; "
                                 f"no report was written\n")
    assert names(folder) == []


# 4. A stopped audit leaves no process and no temporary file behind.

def _stat(pid: int) -> list[str] | None:
    """Fields 3 on of /proc/PID/stat (state, ppid, ... start time at index 19), None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def _descendants(pid: int) -> dict[int, tuple[str, str]]:
    """The processes below ``pid``: pid -> (start time, command line)."""
    found: dict[int, tuple[str, str]] = {}
    parents = {pid}
    while parents:
        children: set[int] = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and (fields := _stat(int(entry.name))) and int(fields[1]) in parents:
                try:
                    cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                found[int(entry.name)] = (fields[19], cmdline)
                children.add(int(entry.name))
        parents = children
    return found


def _alive(pid: int, started: str) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[19] == started and fields[0] not in ("Z", "X")


def _until(condition: Callable[[], Any], seconds: float = 60) -> Any:
    """Poll ``condition`` until it holds (its value) or the deadline passes (its last value)."""
    deadline = time.monotonic() + seconds
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return value


@pytest.fixture(scope="module")
def big_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export the audit takes some seconds on (the worker starts once every record is read, and
    judging them takes seconds more), so a signal finds it running."""
    folder = tmp_path_factory.mktemp("export")
    subprocess.run([sys.executable, str(ROOT / "samples" / "generate.py"), "--iv-only", "--sessions", "8000",
                    "--patients", "1000", "--out", str(folder)], check=True, capture_output=True)
    return folder / "sessions.csv"


@pytest.mark.skipif(not ON_LINUX, reason="reads the process tree from /proc")
def test_sigterm_while_the_worker_starts_gives_one_line(tmp_path: Path) -> None:
    # Two packs make the worker's start-up data more than a pipe holds: a SIGTERM handled while it
    # was being written cut it short, and the worker printed an unpickling traceback of its own.
    samples = ROOT / "samples"
    inputs = [str(samples / f"{name}.csv") for name in ("sessions", "vitals", "screenings", "assessments",
                                                           "enrollments")]
    for _ in range(3):  # the window is a few milliseconds wide: three tries hit it nearly always
        errors = tmp_path / "stderr"
        with errors.open("wb") as stderr:
            process = subprocess.Popen(command("audit", "--pack", "ketamine-iv", "--pack", "esketamine-rems",
                                               *inputs), stdout=subprocess.DEVNULL, stderr=stderr,
                                       env={**os.environ, "PROTOCOL_AUDIT_KEY": "k" * 20})
        try:
            deadline = time.monotonic() + 60
            while process.poll() is None and time.monotonic() < deadline and \
                    not any("spawn_main" in cmd for _, cmd in _descendants(process.pid).values()):
                pass  # no sleep: the signal must come while the worker is being started
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=120)
        finally:
            process.kill()
            process.wait()
        assert (process.returncode, errors.read_text()) == (2, "protocol-audit: terminated; no report was written\n")


@pytest.mark.skipif(not ON_LINUX, reason="reads the process tree from /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL, signal.SIGINT],
                         ids=["sigterm", "sigkill", "sigint"])
def test_a_stopped_audit_leaves_no_process_and_no_temporary_file(big_export: Path, tmp_path: Path,
                                                                  signum: int) -> None:
    out = tmp_path / "out"
    out.mkdir()
    scratch = tmp_path / "tmp"  # where the audit spills records by patient (its history rules)
    scratch.mkdir()
    errors = tmp_path / "stderr"
    # Its own session: SIGINT goes to the whole group, as Ctrl-C on a terminal does. SIGINT set to
    # its default there: a test run started in the background of a script ignores it, and so
    # would the audit, rightly (that is how `command &` is protected from Ctrl-C).
    with errors.open("wb") as stderr:
        process = subprocess.Popen(command("audit", "--pack", "ketamine-iv", str(big_export), "-o",
                                           str(out / "report.json"), "-o", str(out / "report.html")),
                                   stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
                                   env={**os.environ, "TMPDIR": str(scratch)},
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    below: dict[int, tuple[str, str]] = {}
    try:
        below = _until(lambda: (found := _descendants(process.pid))
                       and any("spawn_main" in cmd for _, cmd in found.values())
                       and any("resource_tracker" in cmd for _, cmd in found.values()) and found)
        assert below, "the engine worker never started"
        if signum == signal.SIGINT:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
        process.wait(timeout=120)
        left = _until(lambda: not [pid for pid, (started, _) in below.items() if _alive(pid, started)])
        assert left, f"still running after the audit ended: {below}"
    finally:
        process.kill()
        process.wait()
        for pid, (started, _) in below.items():
            if _alive(pid, started):
                os.kill(pid, signal.SIGKILL)
    assert names(out) == []
    # the records spilled by patient (identifiers included) are in anonymous files: nothing is
    # left even when nothing runs to remove them
    assert names(scratch) == []
    if signum == signal.SIGKILL:
        assert process.returncode == -signal.SIGKILL
    else:
        word = "terminated" if signum == signal.SIGTERM else "interrupted"
        # one line: no traceback from the worker either
        assert (process.returncode, errors.read_text()) == (2, f"protocol-audit: {word}; no report was written\n")


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="named semaphores are files in /dev/shm on Linux only")
def test_the_engine_worker_holds_no_named_semaphore() -> None:
    # a named semaphore (what a multiprocessing queue locks with) that a Ctrl-C catches between
    # its unlink and its release makes the resource tracker print warnings after the audit's
    # one-line message; the worker's channels are plain pipes
    before = set(os.listdir("/dev/shm"))
    with durable.DurableEvaluator({}, {0: []}, timeout=60, target=_sigint_disposition) as engine:
        engine.submit([(0,)], "batch one")
        engine.receive()
        made = {name for name in set(os.listdir("/dev/shm")) - before if name.startswith("sem.")}
    assert made == set()


def _sigint_disposition(ruleset_json: str, keys_json: str, tasks: Any, results: Any) -> None:
    batch_id, _ = tasks.get()
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    results.put((batch_id, b"", None if ignored else "the worker would die of Ctrl-C with a traceback"))


def test_the_engine_worker_leaves_ctrl_c_to_the_audit() -> None:
    with durable.DurableEvaluator({}, {0: []}, timeout=60, target=_sigint_disposition) as engine:
        engine.submit([(0,)], "batch one")
        engine.receive()


def _orphan_check(ruleset_json: str, keys_json: str, tasks: Any, results: Any) -> None:
    """Report the death signal the kernel will send when the parent dies (Linux)."""
    import ctypes

    value = ctypes.c_int(0)
    ctypes.CDLL(None).prctl(2, ctypes.byref(value), 0, 0, 0)  # PR_GET_PDEATHSIG
    batch_id, _ = tasks.get()
    results.put((batch_id, b"", None if value.value == signal.SIGKILL else f"death signal {value.value}"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_engine_worker_is_killed_with_its_parent_on_linux() -> None:
    with durable.DurableEvaluator({}, {0: []}, timeout=60, target=_orphan_check) as engine:
        engine.submit([(0,)], "batch one")
        try:
            engine.receive()
        except EngineError as exc:
            pytest.fail(str(exc))


def test_the_portable_parent_watch_ends_the_worker_when_the_parent_pipe_closes() -> None:
    read, write = os.pipe()
    ended = threading.Event()
    watch = threading.Thread(target=durable.exit_when_closed, args=(read, ended.set), daemon=True)
    watch.start()
    os.close(write)  # what the kernel does to the parent's end when the parent dies
    try:
        assert ended.wait(60)
    finally:
        watch.join(60)
        os.close(read)


# An audit that ended normally keeps its worker for the next audit of the process (engine/judge/
# durable.py): the process then ends, or is stopped, at once, and the kept worker with it.
KEEPS_A_WORKER = """
import sys, time
from engine.judge import durable, pipeline
from engine.packs import load_pack
pipeline.run([load_pack(sys.argv[1])], [sys.argv[2]])
worker = durable.idle_worker()
assert worker is not None and worker.is_alive()
try:
    print(worker.pid, flush=True)
    if sys.argv[3] == "exit":
        sys.exit(0)
    time.sleep(120)
except KeyboardInterrupt:
    sys.exit(3)
"""


def _in_session(session: int) -> list[int]:
    """The processes of session ``session``, wherever they were moved in the tree."""
    return [int(entry.name) for entry in Path("/proc").iterdir()
            if entry.name.isdigit() and (fields := _stat(int(entry.name))) and int(fields[3]) == session]


@pytest.mark.skipif(not ON_LINUX, reason="reads the processes from /proc")
@pytest.mark.parametrize("end, code", [("exit", 0), ("sigint", 3), ("sigkill", -signal.SIGKILL)],
                         ids=["exit", "ctrl-c", "sigkill"])
def test_a_worker_kept_for_the_next_audit_ends_with_its_process(end: str, code: int) -> None:
    # its own session, as a command run from a terminal; SIGINT to the whole group as Ctrl-C sends it
    process = subprocess.Popen([sys.executable, "-c", KEEPS_A_WORKER, str(GOLDEN / "pack.yaml"),
                                str(GOLDEN / "sessions.csv"), end], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert process.stdout is not None
        worker = int(process.stdout.readline())
        if end == "sigint":
            os.killpg(process.pid, signal.SIGINT)
        elif end == "sigkill":
            process.send_signal(signal.SIGKILL)
        # its output ends: nothing left behind holds the pipes
        out, errors = process.communicate(timeout=120)
        assert (process.returncode, out, errors) == (code, "", "")  # the worker ignores Ctrl-C quietly
        left = _until(lambda: not _in_session(process.pid))
        assert left, f"still running after the process ended: {_in_session(process.pid)}"
        assert _stat(worker) is None or _stat(worker)[0] in ("Z", "X")
    finally:
        process.kill()
        process.wait()
        for pid in _in_session(process.pid):
            os.kill(pid, signal.SIGKILL)


# 6. A reader that goes away is a normal end.

@pytest.mark.parametrize("args", [
    ["explain", "--pack", str(GOLDEN / "pack.yaml"), "--rule", "DOSE-01", "--record", "S-02",
     str(GOLDEN / "sessions.csv")],
    ["audit", "--pack", str(GOLDEN / "pack.yaml"), str(GOLDEN / "sessions.csv"), "--as-of", AS_OF],
    ["rules", "ketamine-iv"],
], ids=["explain", "audit", "rules"])
def test_a_closed_stdout_ends_quietly(args: list[str]) -> None:
    read, write = os.pipe()
    os.close(read)  # `| head -1` that has already gone
    try:
        done = subprocess.run(command(*args), stdout=write, stderr=subprocess.PIPE, timeout=300)
    finally:
        os.close(write)
    assert (done.returncode, done.stderr.decode()) == (console.EXIT_CLOSED_PIPE, "")


def test_a_closed_stdout_ends_like_sigpipe_in_the_shell() -> None:
    assert console.EXIT_CLOSED_PIPE == 128 + signal.SIGPIPE


# 7. Control characters in messages are shown, not obeyed.

ESC = "\x1b[31m"
SHOWN = "\\x1b[31m"


def _escape_in_header(folder: Path) -> list[str]:
    (folder / "esc.csv").write_text(f"session_id,patient_id,{ESC}red,{ESC}red\nS-1,P-1,x,y\n")
    return ["audit", "--pack", "pack.yaml", "session=esc.csv"]


# A pack cannot hold a control character as such, but a YAML escape in a quoted string makes one.
YAML_ESC = "\\e[31m"


def _escape_in_pack_key(folder: Path) -> list[str]:
    text = (folder / "pack.yaml").read_text().replace("      dose_mg: number", f'      "dose_mg{YAML_ESC}": number')
    (folder / "esc.yaml").write_text(text)
    return ["validate", "esc.yaml"]


def _escape_in_pack_name(folder: Path) -> list[str]:
    return ["validate", f"pack{ESC}"]


def _escape_in_pack_title(folder: Path) -> list[str]:
    text = (folder / "pack.yaml").read_text()
    (folder / "esc.yaml").write_text("\n".join(f'title: "{YAML_ESC}red"' if line.startswith("title:") else line
                                               for line in text.splitlines()))
    return ["rules", "esc.yaml"]


def _escape_in_output_name(folder: Path) -> list[str]:
    return [*AUDIT, "-o", f"r{ESC}.json"]


def _escape_in_option_value(folder: Path) -> list[str]:
    return ["audit", "--pack", "pack.yaml", "sessions.csv", "--as-of", f"{ESC}2026"]


@pytest.mark.parametrize("make_args", [_escape_in_header, _escape_in_pack_key, _escape_in_pack_name,
                                       _escape_in_pack_title, _escape_in_output_name, _escape_in_option_value],
                         ids=["csv-header", "pack-key", "pack-name", "pack-title", "output-name", "option-value"])
def test_escape_sequences_in_messages_are_shown_not_obeyed(workdir: Path, make_args: Callable[[Path], list[str]]
                                                           ) -> None:
    code, stdout, stderr = run(*make_args(workdir), color=True)  # as a terminal would get them
    assert "\x1b" not in stdout + stderr
    assert SHOWN in stdout + stderr


def test_a_pack_problem_keeps_its_position_with_the_escape_shown(workdir: Path) -> None:
    code, _, stderr = run(*_escape_in_pack_key(workdir), color=True)
    assert code == 2
    assert [line for line in stderr.splitlines() if SHOWN in line][0].startswith("esc.yaml:")


def test_a_line_break_in_a_message_cannot_forge_a_line(workdir: Path) -> None:
    code, _, stderr = run("validate", "pack\nprotocol-audit: all good")
    assert code == 2
    assert len(stderr.splitlines()) == 1 and "pack\\x0aprotocol-audit: all good" in stderr


def test_the_terminal_report_and_the_messages_share_one_cleaner() -> None:
    from engine.reporters import common, terminal_report

    assert terminal_report._clean(f"a\tb{ESC}\u202e") == "a b\\x1b[31m\\u202e"
    assert common.printable(f"a\tb{ESC}", absent="") == "a\\x09b\\x1b[31m"
