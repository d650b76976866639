"""PostgreSQL from Debian's package, as a private cluster under the stack folder.

Why a private cluster (initdb) instead of the system one: no root-wide configuration
changes, nothing shared with other software on the host, and `down` + `rm -rf` removes it.
PostgreSQL refuses to run as root, so when we are root its programs run as the `postgres`
user that Debian's package creates (and the data folder is handed to it). It listens on
127.0.0.1 only, with password (scram) authentication and no Unix socket.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from granvae.stack.config import StackError, StackState

DATABASES = ("mlflow", "mlflow_auth", "prefect")  # mlflow_auth: its users + permissions
# Each service logs in as its own role, which owns its databases and may connect to no other
# (PUBLIC's CONNECT is revoked): a leaked MLflow password cannot read or drop Prefect's tables,
# and the superuser password stays with the stack's own commands (stack.json), never in a
# service's environment.
SERVICE_DATABASES = {"mlflow": ("mlflow", "mlflow_auth"), "prefect": ("prefect",)}
OS_USER = "postgres"


def bindir() -> Path:
    """Debian keeps the server programs in /usr/lib/postgresql/<major>/bin (newest wins)."""
    override = os.environ.get("GRANVAE_PG_BINDIR")
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major)
    if override:
        return Path(override)
    if found:
        return Path(found[-1]).parent
    which = shutil.which("initdb")
    if which:
        return Path(which).resolve().parent
    raise StackError("PostgreSQL not found: apt-get install postgresql (Debian's package)")


def _major(path: str) -> int:
    part = Path(path).parts[-3]
    return int(part) if part.isdigit() else 0


def _run_as() -> str | None:
    """The OS user for server programs: `postgres` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(OS_USER)
    except KeyError as err:
        raise StackError(
            "running as root but there is no `postgres` user to run PostgreSQL as "
            "(apt-get install postgresql creates it)"
        ) from err
    return OS_USER


def _check_reachable(folder: Path, user: str) -> None:
    """The postgres user must be able to enter every parent of its data folder."""
    for parent in folder.parents:
        mode = parent.stat().st_mode
        if not mode & 0o001 and parent.stat().st_uid != pwd.getpwnam(user).pw_uid:
            raise StackError(
                f"{folder}: user {user} cannot enter {parent} (mode {oct(mode & 0o777)}); "
                f"put the stack root elsewhere or `chmod o+x {parent}`"
            )


def _pg(cmd: list[str], state: StackState, log: Path, check: bool = True):
    """Run a server program as the right user; failures name the program and the log."""
    user = _run_as()
    proc = subprocess.run(
        [str(bindir() / cmd[0]), *cmd[1:]], user=user, capture_output=True, text=True,
        env={**os.environ, "PGPASSWORD": state.pg_password, "LC_ALL": "C"},
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise StackError(
            f"postgres: `{cmd[0]}` failed (exit {proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip()[-800:]}; server log {log}"
        )
    return proc


def folder(state: StackState) -> Path:
    return Path(state.root) / "postgres"


def data_dir(state: StackState) -> Path:
    return folder(state) / "data"


def log_file(state: StackState) -> Path:
    return folder(state) / "postgres.log"


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` 0600 from the first byte (mode given to open; O_EXCL: a fresh file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)


def init(state: StackState) -> None:
    """initdb once (a superuser with the generated password), loopback-only settings."""
    home, data = folder(state), data_dir(state)
    if (data / "PG_VERSION").exists():
        return
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    user = _run_as()
    pwfile = home / "pwfile"
    pwfile.unlink(missing_ok=True)  # a leftover of a killed init: never reuse its mode
    _write_private(pwfile, state.pg_password + "\n")
    if user:
        _check_reachable(home, user)
        entry = pwd.getpwnam(user)
        for path in (home, pwfile):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    os.chmod(home, 0o700)
    os.chmod(pwfile, 0o600)
    try:
        _pg(["initdb", "-D", str(data), "-U", state.pg_user, f"--pwfile={pwfile}",
             "--auth-host=scram-sha-256", "--auth-local=reject", "--no-locale",
             "-E", "UTF8"], state, log_file(state))  # fmt: skip
    finally:
        pwfile.unlink(missing_ok=True)
    with open(data / "postgresql.conf", "a") as conf:
        conf.write(
            "\n# granvae stack: loopback only, no Unix socket\n"
            f"listen_addresses = '127.0.0.1'\nport = {state.ports['postgres']}\n"
            "unix_socket_directories = ''\n"
        )


def start(state: StackState, timeout: int = 60) -> int:
    """pg_ctl start (waits until it accepts connections); returns the postmaster pid."""
    _pg(["pg_ctl", "start", "-w", "-t", str(timeout), "-D", str(data_dir(state)),
         "-l", str(log_file(state))], state, log_file(state))  # fmt: skip
    return pid(state) or 0


def stop(state: StackState) -> None:
    """Fast shutdown: open transactions roll back, the data folder stays consistent."""
    if running(state):
        _pg(["pg_ctl", "stop", "-w", "-m", "fast", "-D", str(data_dir(state))], state,
            log_file(state))  # fmt: skip


def restart(state: StackState) -> None:
    """What an operator's restart (or a crash + systemd) looks like to the clients."""
    _pg(["pg_ctl", "restart", "-w", "-m", "fast", "-D", str(data_dir(state)),
         "-l", str(log_file(state))], state, log_file(state))  # fmt: skip


def pid(state: StackState) -> int | None:
    path = data_dir(state) / "postmaster.pid"
    try:
        return int(path.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def running(state: StackState) -> bool:
    if not data_dir(state).exists():
        return False
    return _pg(["pg_ctl", "status", "-D", str(data_dir(state))], state, log_file(state),
               check=False).returncode == 0  # fmt: skip


def _psql(state: StackState, sql: str, database: str = "postgres") -> str:
    """Run SQL as the superuser; the SQL (it may hold a password) goes through stdin, not argv."""
    user = _run_as()
    proc = subprocess.run(
        [str(bindir() / "psql"), "-h", "127.0.0.1", "-p", str(state.ports["postgres"]),
         "-U", state.pg_user, "-d", database, "-v", "ON_ERROR_STOP=1", "-Atq", "-f", "-"],
        user=user, input=sql, capture_output=True, text=True,
        env={**os.environ, "PGPASSWORD": state.pg_password, "LC_ALL": "C"},
    )  # fmt: skip
    if proc.returncode != 0:
        raise StackError(f"postgres: psql failed (exit {proc.returncode}): "
                         f"{proc.stderr.strip()[-800:]}; server log {log_file(state)}")  # fmt: skip
    return proc.stdout


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def create_databases(state: StackState) -> None:
    """One role per service, owning its databases (idempotent).

    A database made by an older stack (owned by the superuser) is left to the superuser
    login, since its tables cannot be handed over in one statement: `state.pg_logins` records
    which role each service uses, and `docs/security.md` says how to move to per-service
    roles (a fresh stack root)."""
    owners = dict(
        line.split("|", 1)
        for line in _psql(state, "SELECT datname, pg_get_userbyid(datdba) FROM pg_database")
        .split()
    )
    roles = set(_psql(state, "SELECT rolname FROM pg_roles").split())
    for service, databases in SERVICE_DATABASES.items():
        verb = "ALTER" if service in roles else "CREATE"
        _psql(state, f"{verb} ROLE {service} LOGIN PASSWORD {_literal(state.pg_roles[service])}")
        legacy = any(owners.get(db, service) != service for db in databases)
        for db in databases:
            if db not in owners:
                _psql(state, f"CREATE DATABASE {db} OWNER {service}")
            _psql(state, f"REVOKE CONNECT, TEMPORARY ON DATABASE {db} FROM PUBLIC")
        state.pg_logins[service] = state.pg_user if legacy else service
    _psql(state, "REVOKE CONNECT, TEMPORARY ON DATABASE postgres FROM PUBLIC")  # admin's only
    # Prefect's migrations ask for pg_trgm; an extension is the superuser's to create
    _psql(state, "CREATE EXTENSION IF NOT EXISTS pg_trgm", database="prefect")


def login(state: StackState, service: str) -> tuple[str, str]:
    """(user, password) a service connects with."""
    user = state.pg_logins.get(service, state.pg_user)
    return user, state.pg_password if user == state.pg_user else state.pg_roles[service]
