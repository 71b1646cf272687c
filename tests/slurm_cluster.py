"""A SLURM cluster of one or two nodes on this machine: munged, slurmctld and a slurmd per
node, started from a generated slurm.conf in a folder of their own, so that sbatch, srun, scontrol
and submitit meet a real scheduler. Two nodes are two slurmd daemons on this host, each on a port
of its own and sharing the CPUs out; their names (the host's and `localhost`) both resolve here,
so that a job's ranks on the two nodes meet. The tests start a two-node one for the session
(conftest's `slurm` fixture); by hand:

    python tests/slurm_cluster.py up [1|2]   # make slurm-up [NODES=1]; prints the SLURM_CONF
    python tests/slurm_cluster.py down       # make slurm-down

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
SlurmdSpoolDir={folder}/spool/%n
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd-%n.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd-%n.log
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
# A cancelled or requeued job's processes get SIGTERM, then SIGKILL this many seconds later.
KillWait=5
{nodes}
PartitionName={partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
NODE = "NodeName={name} NodeAddr=127.0.0.1 Port={port} CPUs={cpus} RealMemory={memory_mb}"


def node_names(nodes: int) -> list[str]:
    """The names of a cluster's nodes: names that resolve to this machine."""
    names = list(dict.fromkeys([socket.gethostname(), "localhost"]))
    if nodes > len(names):
        raise RuntimeError(f"this machine has {len(names)} name(s) for nodes: {', '.join(names)}")
    return names[:nodes]


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


def write_conf(folder: Path, controller_port: int, node_ports: list[int]) -> Path:
    """A slurm.conf for this host, a node per port, with every file under `folder`: the nodes
    share this machine's CPUs and three quarters of its memory out."""
    conf = folder / "slurm.conf"
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 * 3 // 4
    share = {
        "cpus": max(1, os.cpu_count() // len(node_ports)),
        "memory_mb": memory_mb // len(node_ports),
    }
    names = node_names(len(node_ports))
    nodes = [NODE.format(name=n, port=p, **share) for n, p in zip(names, node_ports, strict=True)]
    conf.write_text(
        CONF.format(
            host=socket.gethostname(),
            controller_port=controller_port,
            folder=folder,
            nodes="\n".join(nodes),
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

    @property
    def nodes(self) -> list[str]:
        """The nodes' names, as slurm.conf lists them."""
        lines = self.conf.read_text().splitlines()
        return [
            line.split()[0].removeprefix("NodeName=")
            for line in lines
            if line.startswith("NodeName=")
        ]

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
            path.read_text(errors="replace")
            for path in [self.folder / "slurmctld.log", *sorted(self.folder.glob("slurmd-*.log"))]
            if path.is_file()
        )


def _pid(pid_file: Path, daemon: str) -> int | None:
    """The pid in a daemon's pid file if that process is still this daemon."""
    try:
        pid = int(pid_file.read_text().split()[0])
        name, state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)
    except (OSError, ValueError, IndexError):
        return None
    alive = state.split()[0] != "Z"  # an exited daemon its new parent has not reaped yet
    return pid if alive and name.split("(", 1)[1] == daemon else None


def _pid_files(folder: Path, daemon: str) -> list[Path]:
    """The pid files of a daemon: one for munged and slurmctld, one per node for slurmd."""
    return (
        sorted(folder.glob(f"{daemon}-*.pid")) if daemon == "slurmd" else [folder / f"{daemon}.pid"]
    )


def _wait(condition, timeout: float, what: str, folder: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            stop(folder)
            raise RuntimeError(f"{what} within {timeout:.0f} s; see the logs in {folder}")
        time.sleep(0.1)


def start(folder: Path, nodes: int = 2, controller_port: int | None = None) -> Cluster:
    """Start munged, slurmctld and a slurmd per node from a new slurm.conf in `folder` (short,
    empty or new); returns when every node is idle. Ports are free ones."""
    reason = missing()
    if reason:
        raise RuntimeError(reason)
    names = node_names(nodes)
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
    conf = write_conf(folder, controller_port or free_port(), [free_port() for _ in range(nodes)])
    subprocess.run(["slurmctld", "-f", str(conf)], check=True)
    for name in names:
        subprocess.run(["slurmd", "-f", str(conf), "-N", name], check=True)
    cluster = Cluster(folder)

    def idle() -> bool:
        states = cluster.run("sinfo", "--noheader", "--Node", "--format=%t", check=False).split()
        return states == ["idle"] * nodes

    _wait(idle, 60, "the nodes did not become idle", folder)
    return cluster


def stop(folder: Path) -> None:
    """Cancel the cluster's jobs, then stop the daemons `start` started (by their pid files)."""
    if _pid(folder / "slurmctld.pid", "slurmctld") and (folder / "slurm.conf").is_file():
        cluster = Cluster(folder)
        cluster.run("scancel", "--full", f"--user={os.getuid()}", check=False)
        deadline = time.monotonic() + 30
        while cluster.run("squeue", "--noheader", check=False).strip():
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
    for daemon in reversed(DAEMONS):
        for pid_file in _pid_files(folder, daemon):
            pid = _pid(pid_file, daemon)
            if pid is None:
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while _pid(pid_file, daemon) == pid and time.monotonic() < deadline:
                time.sleep(0.1)
            if _pid(pid_file, daemon) == pid:
                os.kill(pid, signal.SIGKILL)


def main(argv: list[str]) -> int:
    if argv[1:2] == ["up"] and argv[2:] in ([], ["1"], ["2"]):
        if _pid(DEV_FOLDER / "slurmctld.pid", "slurmctld"):
            print(f"already up: export SLURM_CONF={DEV_FOLDER / 'slurm.conf'}")
            return 0
        shutil.rmtree(DEV_FOLDER, ignore_errors=True)
        try:
            cluster = start(DEV_FOLDER, nodes=int((argv[2:] or ["2"])[0]))
        except RuntimeError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(
            f"a cluster of {len(cluster.nodes)} node(s) ({', '.join(cluster.nodes)}) is up; "
            f"clients find it with\n  export SLURM_CONF={cluster.conf}"
        )
        return 0
    if argv[1:] == ["down"]:
        stop(DEV_FOLDER)
        return 0
    print(f"usage: {argv[0]} up [1|2] | down", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
