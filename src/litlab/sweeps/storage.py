"""Where an Optuna search keeps its study, and how a trial's job shows that it is alive.

`hydra.sweeper.storage` is either a file path, Optuna's journal (by default
`<sweep>/optuna.journal`), or a database URL: `postgresql://...`, `mysql://...` or
`sqlite:///<file>`.

The journal is an append-only log of operations that each writer appends under a lock file
made by `symlink` (atomic on NFS from v2 and on Lustre), so it holds when the jobs of a search
write to it from several nodes through a shared filesystem; SQLite relies on `fcntl` locks that
many NFS servers break. A database server holds for any number of nodes and submitters, and is
the one storage that keeps Optuna's heartbeats: with `heartbeat_interval` set, each trial's job
records one while it runs, and a trial whose job stopped beating for `grace_period` seconds is
failed and its parameters asked again (up to `max_retry` times) by whichever submitter asks next.

Optuna is imported only once a search starts (see litlab.sweeps.studies).

    python -m litlab.sweeps.storage <sweep> [--to postgresql://...]

copies the studies of a sweep's SQLite `optuna.db` into its journal (or into the database named),
trial numbers kept, so that the sweep continues there.
"""

import argparse
import logging
import os
import sys
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

from litlab.errors import LitlabError, user_errors

log = logging.getLogger(__name__)

JOURNAL = "optuna.journal"  # a sweep's default storage, in its directory
SQLITE = "optuna.db"  # where litlab kept a sweep's study before the journal
DATABASES = ("postgresql", "mysql", "sqlite")  # the URL schemes Optuna's RDBStorage opens
CONNECT_TIMEOUT_S = 10  # a server that does not answer in this time is not there


def scheme(storage: str) -> str | None:
    """A database URL's scheme without its driver (`postgresql+psycopg` -> `postgresql`); None
    for a journal file."""
    return storage.split("://", 1)[0].split("+", 1)[0] if "://" in storage else None


def sqlite_file(storage: str | None) -> Path | None:
    """The database file of an SQLite storage URL."""
    if isinstance(storage, str) and storage.startswith("sqlite:///"):
        return Path(storage.removeprefix("sqlite:///"))
    return None


def journal_file(storage: str | None) -> Path | None:
    """The journal file a storage names, or None for a database URL."""
    if isinstance(storage, str) and scheme(storage) is None:
        return Path(storage)
    return None


def engine_url(url: str) -> str:
    """The URL SQLAlchemy is given: a bare `postgresql://` is read with psycopg (version 3,
    litlab's `postgres` extra), where SQLAlchemy would look for psycopg2."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def shown(url: str) -> str:
    """A URL as an error line may show it: without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001  (a URL SQLAlchemy cannot parse is shown as given)
        return url


def check_writable(setting: str, target: Path) -> None:
    """Refuse a storage file that cannot be made or written: the first folder that exists on
    its way must take a new file (tried with one that is removed at once)."""
    if target.exists():
        if target.is_file() and os.access(target, os.W_OK):
            return
        problem = f"{target} is not a writable file"
    else:
        existing = next(p for p in target.parents if p.exists())
        try:
            with tempfile.NamedTemporaryFile(dir=existing, prefix=".litlab-probe-"):
                return
        except OSError as err:
            problem = f"{existing} is not a folder this user can write ({err.strerror})"
    raise LitlabError(
        f"hydra.sweeper.storage={setting}: cannot write {target} ({problem}); keep the study in "
        "the sweep directory (the default) or name a writable place"
    )


def check_database(url: str) -> None:
    """Connect to a database server once, so that a wrong URL or a server that is down is
    refused before anything is written."""
    import sqlalchemy

    shown_url = shown(url)
    try:
        args = {"connect_timeout": CONNECT_TIMEOUT_S} if scheme(url) != "sqlite" else {}
        engine = sqlalchemy.create_engine(engine_url(url), connect_args=args)
    except ImportError as err:
        raise LitlabError(
            f"hydra.sweeper.storage={shown_url} needs the {err.name} driver: "
            "pip install 'litlab[postgres]' (psycopg), or a MySQL driver for mysql://"
        ) from err
    except sqlalchemy.exc.ArgumentError as err:
        raise LitlabError(
            f"hydra.sweeper.storage={shown_url} is not a database URL: {err}"
        ) from err
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
    except sqlalchemy.exc.DBAPIError as err:
        reason = " ".join(str(err.orig).split("\n")[0].split())
        raise LitlabError(
            f"hydra.sweeper.storage={shown_url}: cannot reach the database ({reason}); start "
            "the server, or fix the host, port, user, password or database in the URL"
        ) from err
    finally:
        engine.dispose()


def check_storage(storage: str | None, sweep_dir: Path | None = None) -> None:
    """Refuse a storage that cannot be used, before anything is written: a scheme Optuna does
    not open, a file that cannot be written, a database that does not answer; and a journal in
    a sweep whose study is still in SQLite (it would start the study anew over its jobs)."""
    if storage is None:
        return
    if not isinstance(storage, str) or not storage.strip():
        raise LitlabError(
            f"hydra.sweeper.storage={storage!r}: give a journal file path (the default: "
            "${hydra.sweep.dir}/optuna.journal) or a database URL (postgresql://...)"
        )
    kind = scheme(storage)
    if kind == "postgres":
        raise LitlabError(
            f"hydra.sweeper.storage={shown(storage)}: write postgresql://, not postgres:// "
            "(SQLAlchemy, which Optuna opens databases with, knows only the long name)"
        )
    if kind is not None and kind not in DATABASES:
        raise LitlabError(
            f"hydra.sweeper.storage={shown(storage)}: {kind}:// is not a storage Optuna opens; "
            "use a journal file (the default: ${hydra.sweep.dir}/optuna.journal), "
            "postgresql://user:password@host:port/database, mysql://... or sqlite:///<file>"
        )
    if kind == "sqlite":
        if sqlite_file(storage) is None:
            raise LitlabError(
                f"hydra.sweeper.storage={storage}: name the database file as "
                "sqlite:///<path> (three slashes, then the path)"
            )
        check_writable(storage, sqlite_file(storage))
    elif kind is not None:
        check_database(storage)
    else:
        journal = journal_file(storage)
        check_writable(storage, journal)
        old = journal.parent / SQLITE
        if not journal.exists() and old.is_file():
            raise LitlabError(
                f"{journal.parent} keeps its study in {SQLITE} (SQLite), not in the journal "
                f"{journal.name}: move it there with `python -m litlab.sweeps.storage "
                f"{journal.parent}`, or continue it with hydra.sweeper.storage=sqlite:///{old}"
            )


def check_heartbeat(
    storage: str | None,
    heartbeat_interval: int | None,
    grace_period: int | None,
    max_retry: int | None,
) -> None:
    """Heartbeats are kept by a database storage alone; the periods are whole seconds."""
    interval = heartbeat_interval
    for key, value, least in (
        ("heartbeat_interval", interval, 1),
        ("grace_period", grace_period, 1),
        ("max_retry", max_retry, 0),
    ):
        if value is not None and (type(value) is not int or value < least):
            raise LitlabError(
                f"hydra.sweeper.{key}={value}: give a whole number >= {least}, or null"
            )
    if interval is None:
        if grace_period is not None:
            raise LitlabError(
                f"hydra.sweeper.grace_period={grace_period} needs a heartbeat: set "
                "hydra.sweeper.heartbeat_interval too"
            )
        return
    if storage is None or scheme(storage) is None:
        raise LitlabError(
            f"hydra.sweeper.heartbeat_interval={interval} needs a database storage (Optuna's "
            f"journal file keeps no heartbeats): set hydra.sweeper.storage=postgresql://... "
            "(or sqlite:///<file> on one machine)"
        )
    if grace_period is not None and grace_period <= interval:
        raise LitlabError(
            f"hydra.sweeper.grace_period={grace_period} must be longer than heartbeat_interval="
            f"{interval}, or every trial would go stale between two beats"
        )


def open_storage(
    storage: str,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int | None = None,
):
    """Optuna's storage for `storage` (a journal file or a database URL). With a heartbeat, a
    stale trial is failed and asked again up to `max_retry` times (None: always)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    journal = journal_file(storage)
    if journal is not None:
        journal.parent.mkdir(parents=True, exist_ok=True)
        # Optuna's default lock (a symlink), as optuna-dashboard takes it too.
        return optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
    database = sqlite_file(storage)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
        engine = {"connect_args": {"timeout": 60}}  # wait for the other jobs' writes
    else:
        engine = {"pool_pre_ping": True}  # a connection the server closed is made again
    heartbeat = {}
    if heartbeat_interval is not None:
        heartbeat = {
            "heartbeat_interval": heartbeat_interval,
            "grace_period": grace_period,
            "failed_trial_callback": retry_stale(max_retry),
        }
        # Optuna fails stale trials in its own optimize loop; litlab's sweeper asks and tells,
        # and fails them itself before each ask (fail_stale_trials).
        warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used")
    with _quiet_optuna():
        return optuna.storages.RDBStorage(engine_url(storage), engine_kwargs=engine, **heartbeat)


@contextmanager
def _quiet_optuna():
    """Optuna warns that heartbeats and retries are experimental at each use."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", FutureWarning)  # the names Optuna 4 and 5 share
        yield


def retry_stale(max_retry: int | None):
    """What happens to a trial failed as stale: its parameters are asked again (by Optuna's
    RetryFailedTrialCallback) up to `max_retry` times, and the submitter says so."""
    import optuna

    with _quiet_optuna():
        retry = optuna.storages.RetryFailedTrialCallback(max_retry=max_retry)

    def stale(study, trial) -> None:
        tries = len(trial.system_attrs.get("retry_history", [])) + 1
        again = max_retry is None or tries <= max_retry
        then = "its parameters are tried again" if again else f"tried {tries} times, not again"
        log.warning("trial %d's job stopped beating: failed; %s", trial.number, then)
        with _quiet_optuna():
            retry(study, trial)

    return stale


def fail_stale_trials(study) -> None:
    """Fail the study's trials whose job stopped beating (and ask their parameters again, see
    open_storage); nothing without a heartbeat."""
    import optuna

    with _quiet_optuna():
        optuna.storages.fail_stale_trials(study)


def migrate(sweep_dir: Path, to: str | None = None) -> list[str]:
    """Copy every study of `<sweep_dir>/optuna.db` into the sweep's journal, or into the
    database `to`; the names of the studies copied. Trial numbers stay, so that trial N's job
    is still `<sweep_dir>/N`."""
    import optuna

    database = sweep_dir / SQLITE
    if not database.is_file():
        raise LitlabError(f"{sweep_dir} has no {SQLITE} to move: there is nothing to migrate")
    target = to or str(sweep_dir / JOURNAL)
    if to is None:
        check_writable(target, Path(target))
    else:
        check_storage(to)
    source = open_storage(f"sqlite:///{database}")
    destination = open_storage(target)
    names = [study.study_name for study in source.get_all_studies()]
    there = {study.study_name for study in destination.get_all_studies()}
    if clash := sorted(there & set(names)):
        raise LitlabError(
            f"{shown(target)} already holds the study {', '.join(clash)}: the sweep was migrated "
            "already, or name another storage with --to"
        )
    for name in names:
        optuna.copy_study(
            from_study_name=name, from_storage=source, to_storage=destination, to_study_name=name
        )
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m litlab.sweeps.storage",
        description=f"Move a sweep's Optuna study from its {SQLITE} (SQLite) into its journal "
        f"{JOURNAL}, or into a database server; the search then continues there.",
    )
    parser.add_argument("sweep", type=Path, help="the sweep directory (logs/train/multiruns/...)")
    parser.add_argument("--to", help="a database URL instead (postgresql://user@host:port/db)")
    args = parser.parse_args(argv)
    with user_errors():
        names = migrate(args.sweep, args.to)
    target = shown(args.to) if args.to else args.sweep / JOURNAL
    print(f"copied {', '.join(names) or 'no study'} from {args.sweep / SQLITE} to {target}")
    if args.to:
        print(f"continue the search with hydra.sweeper.storage={target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
