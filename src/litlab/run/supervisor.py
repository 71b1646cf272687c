"""A run the kernel kills (out of memory: SIGKILL, exit 137) cannot say so itself: a small
parent process waits for it and does.

`litlab-train` forks once at its start: the child runs the command as ever; the parent, which
has imported no torch and holds a few tens of MiB, waits for it (`os.wait4`, which also gives
the child's peak resident memory). When the child dies by a signal, the parent prints one
`error:` line (the signal, likely out of memory for SIGKILL, the peak memory, what the run
keeps and the command that continues it), writes the same into the run's `killed.json` (which
`litlab-report` shows) and its log, and exits 128 + the signal, as a shell would.

Ctrl-C reaches the child from the terminal, so the parent ignores SIGINT; a SIGTERM or SIGHUP
sent to the parent alone (`docker stop`, `kill <pid>`) is passed on. The child dies with its
parent (`PR_SET_PDEATHSIG`), so killing the parent never leaves a run training unseen.
Jobs a scheduler runs (SLURM, submitit) and Lightning's further DDP ranks have parents of
their own and are not forked.
"""

import ctypes
import json
import os
import signal
import sys
import threading
from contextlib import suppress
from pathlib import Path

from litlab.files import human_size

KILLED = "killed.json"  # in a run killed by a signal: what killed it, its peak memory
_NOTES = "LITLAB_SUPERVISOR"  # "<parent pid>:<fd>": where the child tells which run it is in
_PR_SET_PDEATHSIG = 1


def _wanted() -> bool:
    scheduled = {"SLURM_JOB_ID", "SUBMITIT_EXECUTOR", "LOCAL_RANK", _NOTES} & set(os.environ)
    return not scheduled and sys.platform == "linux" and hasattr(os, "wait4")


def supervise() -> None:
    """Fork (see the module): returns in the child; the parent exits as the child did."""
    if not _wanted():
        return
    notes_in, notes_out = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(notes_in)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() == 1:  # the parent died before that took effect
            os._exit(137)
        os.environ[_NOTES] = f"{os.getppid()}:{notes_out}"
        return
    os.close(notes_out)
    runs = []  # read as they come: a long sweep's notes would fill the pipe
    reader = threading.Thread(target=_read_notes, args=(notes_in, runs), daemon=True)
    reader.start()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal sends Ctrl-C to the child too
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda signum, frame: os.kill(pid, signum))
    _, status, usage = os.wait4(pid, 0)
    reader.join()  # the child's end is closed: the notes are all read
    if not os.WIFSIGNALED(status):
        os._exit(os.waitstatus_to_exitcode(status))
    signum = os.WTERMSIG(status)
    peak = usage.ru_maxrss * 1024  # KiB on Linux
    if runs:
        print(f"error: {killed(runs[-1], signum, peak)}", file=sys.stderr)
    else:  # before it got to a run
        likely = ", likely out of memory" if signum == signal.SIGKILL else ""
        print(
            f"error: litlab-train was killed by signal {signum} ({_signal_name(signum)}){likely} "
            f"(peak memory {human_size(peak)})",
            file=sys.stderr,
        )
    os._exit(128 + signum)


def _read_notes(fd: int, runs: list) -> None:
    with os.fdopen(fd) as notes:
        for line in notes:
            runs.append(json.loads(line))


def note_run(run_dir: Path, sweep: str | None) -> None:
    """In the child: tell the parent the run it is in now (a job of the sweep `sweep`)."""
    parent, _, fd = os.environ.get(_NOTES, "").partition(":")
    (Path(run_dir) / KILLED).unlink(missing_ok=True)  # it goes on now
    if parent == str(os.getppid()):  # not a process that inherited the variable (a DDP rank)
        line = json.dumps({"run": str(run_dir), "sweep": sweep}) + "\n"
        with suppress(OSError):  # a parent that stopped listening
            os.write(int(fd), line.encode())


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


def killed(run: dict, signum: int, peak: int | None) -> str:
    """Record in the run that `signum` killed it (its peak memory `peak` bytes, where known);
    the line that says so."""
    from litlab.run.directory import RunDir
    from litlab.run.faults import continue_command, kept

    run_dir = RunDir(run["run"])
    likely = signum == signal.SIGKILL
    memory = f" (peak memory {human_size(peak)})" if peak else ""
    line = (
        f"{run_dir.path} was killed by signal {signum} ({_signal_name(signum)})"
        f"{', likely out of memory' if likely else ''}{memory}; {kept(run_dir)}; "
        f"continue with: {continue_command(run_dir, run['sweep'])}"
    )
    record_killed(run_dir.path, signum, likely, peak, line)
    return line


def record_killed(
    run_dir: Path, signum: int | None, likely_out_of_memory: bool, peak: int | None, line: str
) -> None:
    """Write into a killed run what killed it (`killed.json`, which litlab-report reads) and
    `line` into its log; where the disk refuses, the line on the console says it all the same."""
    record = {
        "signal": signum,
        "likely_out_of_memory": likely_out_of_memory,
        "peak_memory_bytes": peak,
        "message": line,
    }
    with suppress(OSError):
        (Path(run_dir) / KILLED).write_text(json.dumps(record, indent=2) + "\n")
        with (Path(run_dir) / "train.log").open("a") as log:
            log.write(f"error: {line}\n")


def read_killed(run_dir: Path) -> str | None:
    """How a run's process was killed, in a few words (`killed.json`); None when it was not."""
    try:
        record = json.loads((Path(run_dir) / KILLED).read_text())
    except (OSError, ValueError):
        return None
    words = f"killed by signal {record['signal']}" if record.get("signal") else "killed"
    if record.get("likely_out_of_memory"):
        words = "killed, likely out of memory"
    if record.get("peak_memory_bytes"):
        words += f" (peak {human_size(record['peak_memory_bytes'])})"
    return words
