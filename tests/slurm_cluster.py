"""A one-node SLURM cluster on this machine: munged, slurmctld and slurmd, started from a
generated slurm.conf in a folder of their own, so that sbatch, srun, scontrol and submitit meet a
real scheduler. The tests start one for the session (conftest's `slurm` fixture); by hand:

    python tests/slurm_cluster.py up     # make slurm-up; prints the SLURM_CONF to export
    python tests/slurm_cluster.py down   # make slurm-down

It installs nothing: Debian's `slurm-wlm` and `munge` packages (`make slurm`), run as root.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")  # started in this order, stopped in reverse
CLIENTS = ("sbatch", "squeue", "sinfo", "scontrol", "scancel", "srun", "mungekey")
HOW = "`make slurm` installs them (apt-get install slurm-wlm munge), as root"
# Where `up` keeps its cluster (a folder of its own: the munge socket path must stay short).
DEV_FOLDER = Path(os.environ.get("LITLAB_SLURM_DIR", "/tmp/litlab-slurm"))
PARTITION = "debug"

CONF = """\
ClusterName=litlab
SlurmctldHost={host}
SlurmctldPort={controller_port}
SlurmdPort={node_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={folder}/munge/socket
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
# A cancelled or requeued job's processes get SIGTERM, then SIGKILL this many seconds later.
KillWait=5
NodeName={host} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName={partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def missing() -> str | None:
    """Why no cluster can start here, or None."""
    absent = [name for name in (*DAEMONS, *CLIENTS) if shutil.which(name) is None]
    if absent:
        return f"SLURM's {', '.join(absent)} are not installed: {HOW}"
    if os.geteuid() != 0:
        return "slurmd runs jobs as any user and starts only as root: run the SLURM tests as root"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_conf(folder: Path, controller_port: int, node_port: int) -> Path:
    """A slurm.conf for this host, with every file under `folder`."""
    conf = folder / "slurm.conf"
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 * 3 // 4
    conf.write_text(
        CONF.format(
            host=socket.gethostname(),
            controller_port=controller_port,
            node_port=node_port,
            folder=folder,
            cpus=os.cpu_count(),
            memory_mb=memory_mb,
            partition=PARTITION,
        )
    )
    return conf


@dataclass
class Cluster:
    """A running cluster: clients find it through SLURM_CONF in `env`."""

    folder: Path

    @property
    def conf(self) -> Path:
        return self.folder / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *command: str, check: bool = True) -> str:
        """A client command's output (scontrol, squeue, sinfo ...)."""
        done = subprocess.run(
            command, env=self.env, capture_output=True, text=True, timeout=60, check=False
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()}")
        return done.stdout

    def log(self) -> str:
        return "".join(
            (self.folder / name).read_text(errors="replace")
            for name in ("slurmctld.log", "slurmd.log")
            if (self.folder / name).is_file()
        )


def _pid(folder: Path, daemon: str) -> int | None:
    """The pid in a daemon's pid file if that process is still this daemon."""
    try:
        pid = int((folder / f"{daemon}.pid").read_text().split()[0])
        name, state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)
    except (OSError, ValueError, IndexError):
        return None
    alive = state.split()[0] != "Z"  # an exited daemon its new parent has not reaped yet
    return pid if alive and name.split("(", 1)[1] == daemon else None


def _wait(condition, timeout: float, what: str, folder: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            stop(folder)
            raise RuntimeError(f"{what} within {timeout:.0f} s; see the logs in {folder}")
        time.sleep(0.1)


def start(folder: Path, controller_port: int | None = None, node_port: int | None = None):
    """Start munged, slurmctld and slurmd from a new slurm.conf in `folder` (short, empty or
    new); returns when the node is idle. Ports default to free ones."""
    reason = missing()
    if reason:
        raise RuntimeError(reason)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)  # munged, as user munge, reaches its own folder in it
    for sub in ("state", "spool"):
        (folder / sub).mkdir(exist_ok=True)
    munge = folder / "munge"
    munge.mkdir(exist_ok=True)
    shutil.chown(munge, "munge", "munge")
    munge.chmod(0o711)  # clients reach the socket, only munge lists or writes
    key = munge / "munge.key"
    as_munge = ["runuser", "-u", "munge", "--"]
    if not key.is_file():
        subprocess.run([*as_munge, "mungekey", "--create", f"--keyfile={key}"], check=True)
    subprocess.run(
        [
            *as_munge,
            "munged",
            f"--socket={munge}/socket",
            f"--key-file={key}",
            f"--pid-file={munge}/munged.pid",
            f"--log-file={munge}/munged.log",
            f"--seed-file={munge}/munged.seed",
        ],
        check=True,
    )
    (folder / "munged.pid").symlink_to(munge / "munged.pid")
    conf = write_conf(folder, controller_port or free_port(), node_port or free_port())
    for daemon in ("slurmctld", "slurmd"):
        subprocess.run([daemon, "-f", str(conf)], check=True)
    cluster = Cluster(folder)

    def idle() -> bool:
        states = cluster.run("sinfo", "--noheader", "--format=%t", check=False).split()
        return states == ["idle"]

    _wait(idle, 60, "the node did not become idle", folder)
    return cluster


def stop(folder: Path) -> None:
    """Cancel the cluster's jobs, then stop the daemons `start` started (by their pid files)."""
    if _pid(folder, "slurmctld") and (folder / "slurm.conf").is_file():
        cluster = Cluster(folder)
        cluster.run("scancel", "--full", f"--user={os.getuid()}", check=False)
        deadline = time.monotonic() + 30
        while cluster.run("squeue", "--noheader", check=False).strip():
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
    for daemon in reversed(DAEMONS):
        pid = _pid(folder, daemon)
        if pid is None:
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while _pid(folder, daemon) == pid and time.monotonic() < deadline:
            time.sleep(0.1)
        if _pid(folder, daemon) == pid:
            os.kill(pid, signal.SIGKILL)


def main(argv: list[str]) -> int:
    if argv[1:] == ["up"]:
        if _pid(DEV_FOLDER, "slurmctld"):
            print(f"already up: export SLURM_CONF={DEV_FOLDER / 'slurm.conf'}")
            return 0
        shutil.rmtree(DEV_FOLDER, ignore_errors=True)
        try:
            cluster = start(DEV_FOLDER)
        except RuntimeError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"a one-node cluster is up; clients find it with\n  export SLURM_CONF={cluster.conf}")
        return 0
    if argv[1:] == ["down"]:
        stop(DEV_FOLDER)
        return 0
    print(f"usage: {argv[0]} up|down", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
