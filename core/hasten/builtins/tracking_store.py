"""The MLflow tracking store, checked and prepared before a run starts.

* A tracking URI whose scheme no installed MLflow store serves is refused at
  start (not when the first metrics are sent, or after training).
* A local SQLite store (the default ``sqlite:///mlruns.db``) is created, or
  upgraded to the installed MLflow's schema, *atomically*: the work happens
  in a temporary file in the same folder, which then replaces the target with
  ``os.replace``. A kill at any moment leaves either no store (or the old
  one, untouched) or a complete one, never a half-created one; an upgrade
  keeps a copy of the old file (``<file>.bak-<revision>``).
* A store file that exists but is not a complete MLflow database (not
  SQLite, or tables missing, or a schema revision this MLflow does not know)
  is *broken*, which is a different thing from a server that does not
  answer: the error names the file and the recovery.

Creation runs under an exclusive ``flock`` on ``.<file>.lock`` next to the
store, so two runs started at the same moment never replace each other's
fresh store.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sqlite3
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from hasten.errors import UserError

CREATING_INFIX = ".creating-"


def uri_scheme(uri: str) -> str:
    """The store scheme MLflow dispatches ``uri`` on ('' for a local path; 'postgresql' for postgresql+psycopg2)."""
    scheme = urllib.parse.urlparse(uri).scheme
    if len(scheme) == 1 and scheme.isalpha():  # a Windows drive letter
        return ""
    return scheme.split("+", 1)[0]


def supported_schemes() -> list[str]:
    """The schemes the installed MLflow (and its store plugins) can track to."""
    try:
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry

        return sorted(str(s) for s in _tracking_store_registry._registry)
    except (ImportError, AttributeError):  # a private API that moved: MLflow's documented schemes
        return ["", "databricks", "file", "http", "https", "mssql", "mysql", "postgresql", "sqlite"]


def check_uri(uri: str, key: str = "tracking.uri") -> None:
    """Refuse a URI no MLflow store serves, naming the scheme and those allowed."""
    scheme = uri_scheme(uri)
    allowed = supported_schemes()
    if scheme not in allowed:
        shown = ", ".join(f"{s}://" for s in allowed if s) + " or a local folder path"
        raise UserError(f"{key}: {uri!r}: no MLflow tracking store serves the scheme {scheme!r}; allowed: {shown}")
    if scheme == "sqlite" and not uri.startswith("sqlite:///"):
        raise UserError(
            f"{key}: {uri!r}: an SQLite URI is sqlite:///relative/path.db or sqlite:////absolute/path.db (three "
            "slashes before the path)"
        )


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI; None for other URIs and in-memory databases."""
    if not uri.startswith("sqlite:///"):
        return None
    raw = urllib.parse.urlparse(uri).path[1:]  # sqlite:///a.db -> 'a.db', sqlite:////abs/a.db -> '/abs/a.db'
    if raw in ("", ":memory:"):
        return None
    return Path(raw)


def recovery_hint(path: Path) -> str:
    return (
        f"move it aside (mv {path} {path}.broken) and run again, or set tracking.uri to another store; a run "
        "whose tracking data could not be sent keeps it in RUN_DIR/tracking-fallback.jsonl: send it with "
        f"`hasten sync RUN_DIR --uri sqlite:///{path}`"
    )


def _tables_and_revision(path: Path) -> tuple[set[str], str | None]:
    """The table names and the alembic revision of an SQLite file; UserError when it is not SQLite."""
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            revision = None
            if "alembic_version" in tables:
                row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
                revision = None if row is None else str(row[0])
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        raise UserError(
            f"tracking store {path} is broken: not an SQLite database ({exc}); {recovery_hint(path)}"
        ) from None
    return tables, revision


def _expected() -> tuple[set[str], str, set[str]]:
    """The tables MLflow's schema has, its head revision, and every revision it knows."""
    from alembic.script import ScriptDirectory
    from mlflow.store.db.base_sql_model import Base
    from mlflow.store.db.utils import _get_alembic_config

    script = ScriptDirectory.from_config(_get_alembic_config(db_url=""))
    heads = script.get_heads()
    known = {rev.revision for rev in script.walk_revisions()}
    return set(Base.metadata.tables), heads[0], known


def store_problem(path: Path) -> str | None:
    """Why the SQLite file at ``path`` is not a usable MLflow store (None: usable or upgradable)."""
    tables, revision = _tables_and_revision(path)
    if not tables:
        return None  # empty: created from scratch
    expected, _head, known = _expected()
    missing = sorted(expected - tables)
    if missing or revision is None:
        what = f"tables {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''} are missing" if missing else (
            "it has no schema revision"
        )
        return f"tracking store {path} is broken: {what} (its creation was interrupted?)"
    if revision not in known:
        return (
            f"tracking store {path} has schema revision {revision}, which the installed MLflow does not know "
            "(written by a newer MLflow?); upgrade mlflow"
        )
    return None


@contextlib.contextmanager
def _creation_lock(path: Path) -> Iterator[None]:
    lock = path.with_name(f".{path.name}.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _build(target: Path, source: Path | None) -> None:
    """Let MLflow create (or upgrade a copy of ``source``) in a temporary file, then move it onto ``target``."""
    tmp = target.with_name(f".{target.name}{CREATING_INFIX}{os.getpid()}")
    tmp.unlink(missing_ok=True)
    if source is not None:
        shutil.copy2(source, tmp)
    from mlflow.store.db.utils import _upgrade_db
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp.resolve()}"
    try:
        if source is not None:
            from sqlalchemy import create_engine

            engine = create_engine(uri)
            try:
                _upgrade_db(engine)
            finally:
                engine.dispose()
        # Opening a client's store creates the tables and the default experiment exactly as a run would.
        store = MlflowClient(tracking_uri=uri)._tracking_client.store
        store_engine = getattr(store, "engine", None)
        if store_engine is not None:
            store_engine.dispose()
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        for side in (tmp.with_name(tmp.name + "-journal"), tmp.with_name(tmp.name + "-wal")):
            side.unlink(missing_ok=True)
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def prepare_store(uri: str) -> None:
    """Create or upgrade a local SQLite store atomically; UserError naming the file when it is broken.

    Other URIs are left to MLflow (a server that does not answer is retried
    during the run and its data saved to the fallback file).
    """
    path = sqlite_path(uri)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with _creation_lock(path):
        for stale in path.parent.glob(f".{path.name}{CREATING_INFIX}*"):  # a creation a kill interrupted
            stale.unlink(missing_ok=True)
        if not path.exists() or path.stat().st_size == 0:
            _build(path, None)
            return
        problem = store_problem(path)
        if problem is not None:
            raise UserError(f"{problem}; {recovery_hint(path)}")
        _tables, revision = _tables_and_revision(path)
        _expected_tables, head, _known = _expected()
        if not _tables:
            _build(path, None)
        elif revision != head:
            backup = path.with_name(f"{path.name}.bak-{revision}")
            shutil.copy2(path, backup)
            _build(path, path)
