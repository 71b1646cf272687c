"""How much memory this process can still take: what a run checks before it allocates a large
block at once, so that it is refused with one line rather than killed by the kernel later."""

from pathlib import Path

from litlab.errors import LitlabError
from litlab.files import human_size


def _number(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def _cgroup_room() -> int | None:
    """What this process's memory cgroup (v2, or v1's memory controller) still allows; None
    where none limits it."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    rooms = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2
            group = Path("/sys/fs/cgroup") / path.lstrip("/")
            limit, used = group / "memory.max", group / "memory.current"
        elif "memory" in controllers.split(","):
            group = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            limit, used = group / "memory.limit_in_bytes", group / "memory.usage_in_bytes"
        else:
            continue
        limit_bytes, used_bytes = _number(limit), _number(used)
        if limit_bytes is not None and used_bytes is not None and limit_bytes < 2**60:
            rooms.append(limit_bytes - used_bytes)
    return min(rooms, default=None)


def available_memory() -> int | None:
    """Bytes this process can still allocate: the machine's available memory, or less where
    its cgroup (a container, a SLURM job) limits it; None where neither is known."""
    machine = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                machine = int(line.split()[1]) * 1024
    except OSError:
        pass
    known = [room for room in (machine, _cgroup_room()) if room is not None]
    return max(min(known), 0) if known else None


def check_room(needed: int, what: str, fix: str) -> None:
    """Refuse to allocate `needed` bytes at once for `what` where this process has not that
    much memory left (`fix`: how to need less)."""
    room = available_memory()
    if room is not None and needed > room:
        raise LitlabError(
            f"{what} take {human_size(needed)} in memory, more than the {human_size(room)} "
            f"this machine has free; {fix}"
        )
