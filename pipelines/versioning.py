"""DVC + git for the data repository: the only module that shells out to dvc or imports it.

Why the `dvc` CLI and not `dvc.repo.Repo`: the CLI is DVC's stable contract, `Repo` is
internal. Why sequential callers: DVC holds a repository-wide lock, so parallel tasks
would fail at random; the flow calls `version_snapshot` from one task before the sweep and
`lock_pipeline` from one task after registration, never at once. Reads (the
tracked md5 at a commit, the remote URL of the snapshot) go through `dvc.api`, which
never takes the write lock.

Every step is idempotent, so a retry or a rerun after a crash converges: `dvc add` of the
same bytes yields the same md5, git commits only when the .dvc file changed, `dvc push`
skips objects the remote already has.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

IDENTITY = ["-c", "user.name=granvae-pipeline", "-c", "user.email=granvae-pipeline@localhost"]


class VersioningError(RuntimeError):
    """A git or dvc command failed; the message carries the command and its stderr."""


@dataclass(frozen=True)
class SnapshotVersion:
    """What one retrain's data is: the commit that pinned it and DVC's md5 of the folder."""

    data_version: str  # "<git short sha>:<dvc md5>"
    git_sha: str
    md5: str
    snapshot: str  # absolute path of the tracked folder
    repo: str
    remote: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _env() -> dict[str, str]:
    """The interpreter's own bin folder first: `dvc` (and the stages' `python`) must be the
    ones installed beside granvae even when the virtual environment was never activated."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, "DVC_NO_ANALYTICS": "1", "GIT_TERMINAL_PROMPT": "0"}


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run git/dvc in `cwd`; failures raise VersioningError naming the command."""
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        detail = " | ".join(t.strip() for t in (proc.stderr, proc.stdout) if t and t.strip())
        raise VersioningError(
            f"`{' '.join(cmd)}` failed in {cwd} (exit {proc.returncode}): "
            f"{detail[-1500:] or 'no output'}"
        )
    return proc


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    identity = [] if run(["git", "config", "user.email"], repo, check=False).stdout else IDENTITY
    return run(["git", *identity, *args], repo, check=check)


def default_remote(repo: Path) -> Path:
    """A local folder beside the data repo: survives `rm -rf repo`, needs no credentials."""
    repo = repo.resolve()
    return repo.parent / f"{repo.name}-dvc-remote"


def _commit(repo: Path, paths: list[str], message: str) -> bool:
    """Commit exactly `paths` (never the user's other changes); False if nothing changed."""
    _git(repo, "add", "--", *paths)
    if _git(repo, "diff", "--cached", "--quiet", "--", *paths, check=False).returncode == 0:
        return False
    _git(repo, "commit", "-q", "-m", message, "--", *paths)
    return True


def _stored_url(repo: Path, name: str) -> str | None:
    """The remote's URL as .dvc/config spells it (`dvc remote list` shows it made absolute,
    so only the file tells a relative URL from an absolute one)."""
    from configobj import ConfigObj

    config = ConfigObj(str(repo / ".dvc" / "config"))
    return (config.get(f'remote "{name}"') or {}).get("url")


def _configure_remote(repo: Path, name: str, url: str) -> None:
    """Add (or repoint) the remote; made default only when it is new, so a project's own
    default survives (we always push with `-r name`, so the default is not needed).
    A relative `url` is relative to the repo; DVC stores it relative to .dvc/config."""
    wanted = os.path.relpath(repo / url, repo / ".dvc") if "://" not in url else url
    if _stored_url(repo, name) not in (url, wanted):
        any_remote = run(["dvc", "remote", "list"], repo).stdout.strip()
        default = [] if any_remote else ["--default"]
        run(["dvc", "remote", "add", "--force", *default, name, url], repo)


def ensure_repo(repo: Path, remote: str | None, remote_name: str = "storage") -> str:
    """git init + dvc init + a default remote, each only if missing; returns the remote URL."""
    repo.mkdir(parents=True, exist_ok=True)
    if not (repo / ".git").exists():
        run(["git", "init", "-q"], repo)
    if not (repo / ".dvc").is_dir():
        run(["dvc", "init"], repo)
    url = remote or str(default_remote(repo))
    if "://" not in url:
        Path(url).mkdir(parents=True, exist_ok=True)
    # The default remote beside the repo is named relative to it, so moving the project
    # folder (`mv ~/proj ~/proj2`) keeps `dvc pull` working; a remote you name stays as given.
    _configure_remote(repo, remote_name, remote or os.path.relpath(url, repo))
    _commit(repo, [".dvc/config", ".dvc/.gitignore", ".dvcignore"], "dvc: init data repository")
    return url


def replace_folder(source: Path, target: Path) -> None:
    """Copy a dataset store into the repo: copied aside first, then swapped in by rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.incoming")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.rename(target, old)
    os.rename(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def tracked_md5(repo: Path, path: str, rev: str | None = None) -> str:
    """DVC's md5 of a tracked folder at a commit, read through dvc.api (no write lock)."""
    from dvc.api import DVCFileSystem

    info = DVCFileSystem(str(repo), rev=rev).info(path)
    md5 = info.get("md5") or (info.get("dvc_info") or {}).get("md5")
    if not md5:
        raise VersioningError(f"{path} is not tracked by DVC in {repo} (rev {rev or 'workspace'})")
    return str(md5).removesuffix(".dir")


def remote_url(repo: Path, path: str, rev: str | None = None) -> str:
    """Where the remote keeps the snapshot's directory object (dvc.api.get_url)."""
    import dvc.api

    return dvc.api.get_url(path, repo=str(repo), rev=rev)


def last_commit(repo: Path, path: str) -> str:
    """The short sha of the commit that last changed `path` (stable across no-op reruns)."""
    out = _git(repo, "log", "-n", "1", "--format=%h", "--abbrev=10", "--", path).stdout.strip()
    if not out:
        raise VersioningError(f"{path} has no commit in {repo}")
    return out


def version_snapshot(
    staging: Path, repo: Path, snapshot: str, remote: str | None, remote_name: str = "storage"
) -> SnapshotVersion:
    """Put the validated store under DVC: copy in, dvc add, git commit, dvc push."""
    repo = repo.resolve()
    url = ensure_repo(repo, remote, remote_name)
    target = repo / snapshot
    replace_folder(staging, target)
    run(["dvc", "add", snapshot], repo)  # not -q: a refusal's reason is in its output
    dvc_file = f"{snapshot}.dvc"
    gitignore = str(Path(snapshot).parent / ".gitignore")
    md5 = tracked_md5(repo, snapshot)  # the working copy, before it is committed
    _commit(repo, [dvc_file, gitignore], f"data: snapshot {md5}")
    run(["dvc", "push", "-r", remote_name, dvc_file], repo)
    sha = last_commit(repo, dvc_file)
    return SnapshotVersion(f"{sha}:{md5}", sha, md5, str(target), str(repo), url)


MARKER = "# written by granvae retrain"


def _ours(path: Path) -> bool:
    """Missing, or written by an earlier retrain: a user's own file is never replaced."""
    return not path.exists() or path.read_text().startswith(MARKER)


def commit_pipeline(repo: Path, files: dict[str, str], message: str) -> list[str]:
    """Write dvc.yaml / params.yaml (the resolved params of this retrain) into the data
    repository and commit exactly them, so `dvc repro` there rebuilds the same grid.
    Returns the files written; a file the user keeps there is left alone."""
    repo = repo.resolve()
    written = []
    for name, text in files.items():
        target = repo / name
        if _ours(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(f"{MARKER}; `dvc repro` here rebuilds it\n{text}")
            written.append(name)
    if written:
        _commit(repo, written, message)
    return written


def lock_pipeline(repo: Path, git_paths: list[str], message: str, remote_name: str) -> bool:
    """Record the outputs now in the workspace as the stages' results, as `dvc repro` would.

    `dvc commit --force` hashes every stage's deps, params and outs into dvc.lock and moves
    cached outs into the cache (--force: no prompt, the flow made these outputs itself, not
    the stage commands); `dvc push` sends them to the remote, so `dvc status -c` is in sync
    and a clone can `dvc pull` them; git then commits dvc.lock and the git-tracked outs
    (`cache: false`), so `dvc status` is clean and `dvc metrics diff` has both sides.
    Returns False when nothing changed (a rerun of the same retrain)."""
    repo = repo.resolve()
    run(["dvc", "commit", "--force"], repo)
    run(["dvc", "push", "-r", remote_name], repo)
    return _commit(repo, ["dvc.lock", *git_paths], message)
