"""`granvae register | promote | rollback | models | ui`: thin Typer wrappers.

Mounted on the main app by granvae/cli.py via `add_commands(app)`. Each command reads
params.yaml (`select:` for the policy, `tracking:` for where tracking goes), calls one
library function and turns the library's refusals into a clear message and exit code 2
(1 for "nothing passed the gates", which is an answer rather than an error).
"""

from __future__ import annotations

import getpass
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from granvae.cli_options import SetOpt

console = Console()
ParamsOpt = Annotated[Path | None, typer.Option("--params", help="params.yaml to read")]
NameOpt = Annotated[str | None, typer.Option("--model-name", help="registered model name")]


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)  # one line, even piped
    raise typer.Exit(code=code)


def _settings(params: Path | None, sets: list[str] | None = None):
    """(Settings, TrackingSettings, SelectionPolicy) from params.yaml; errors name the field."""
    from pydantic import ValidationError

    from granvae.config import SettingsError, load_settings
    from granvae.select import SelectionPolicy
    from granvae.tracking import TrackingSettings

    try:
        settings = load_settings(params, sets=sets)
        return (
            settings,
            TrackingSettings.model_validate(settings.tracking),
            SelectionPolicy.model_validate(settings.select),
        )
    except (SettingsError, ValidationError) as err:
        _fail(str(err))


def _store(tracking, read_only: bool = False):
    """The Store a command uses, announced on stderr (which store, found where); a command
    that only reads refuses to create an empty embedded store (granvae.project)."""
    from granvae.project import NoStoreHere, require_store
    from granvae.tracking import Store
    from granvae.tracking.store import resolve_uri

    uri = resolve_uri(tracking)
    if read_only:
        try:
            require_store(uri)
        except NoStoreHere as err:
            _fail(str(err))
    where = f"project {tracking.workdir}" if uri.startswith("sqlite:") else "server"
    Console(stderr=True).print(f"store: {uri} ({where})", soft_wrap=True, highlight=False)
    return Store(tracking)


def git_commit(start: Path | None = None) -> str | None:
    """HEAD's commit read from .git files (no git binary needed on a training box)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        head = folder / ".git" / "HEAD"
        if not head.is_file():
            continue
        ref = head.read_text().strip()
        if not ref.startswith("ref: "):
            return ref or None
        name = ref[5:]
        loose = folder / ".git" / name
        if loose.is_file():
            return loose.read_text().strip()
        packed = folder / ".git" / "packed-refs"
        lines = packed.read_text().splitlines() if packed.is_file() else []
        return next((ln.split()[0] for ln in lines if ln.endswith(" " + name)), None)
    return None


def register_cmd(
    sweep_dir: Annotated[Path, typer.Argument(help="a sweep folder (granvae sweep --out)")],
    bundle: Annotated[Path | None, typer.Option(help="ONNX edge bundle folder")] = None,
    model_name: NameOpt = None,
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment")] = None,
    data_version: Annotated[str | None, typer.Option(help="override sweep.json's")] = None,
    params: ParamsOpt = None,
    set_: SetOpt = None,
) -> None:
    """Select the winner by the params.yaml policy and register it with alias challenger."""
    from granvae.select import decision_markdown, load_rows, load_scores, select, write_decision
    from granvae.tracking import RegistrationRefused, TrackingUnavailable, register_winner

    _, tracking, policy = _settings(params, set_)
    if not (sweep_dir / "results.json").is_file():
        _fail(f"{sweep_dir} has no results.json: not a finished sweep folder")
    rows = load_rows(sweep_dir)
    decision = select(rows, policy, load_scores(sweep_dir, rows))
    write_decision(decision, sweep_dir)
    console.print(decision_markdown(decision))
    if decision.winner is None:
        _fail(f"nothing registered: {decision.why}", code=1)
    if not (sweep_dir / "report" / "report.html").is_file():
        from granvae.report import build_report

        build_report(sweep_dir, all_candidates=True)  # the plots people decide on in the UI
    name = model_name or tracking.model_name
    try:
        version = register_winner(
            sweep_dir, decision, name, bundle_dir=bundle, data_version=data_version,
            git_commit=git_commit(), store=_store(tracking),
            experiment=experiment or tracking.experiment,
        )  # fmt: skip
    except (RegistrationRefused, TrackingUnavailable) as err:
        _fail(str(err))
    console.print(f"registered [bold]{name}[/bold] version {version} with alias challenger")


def promote_cmd(
    version: Annotated[int | None, typer.Option(help="default: the current challenger")] = None,
    force: Annotated[bool, typer.Option(help="override the gate/champion checks")] = False,
    reason: Annotated[str, typer.Option(help="why; recorded with the move")] = "",
    model_name: NameOpt = None,
    user: Annotated[str | None, typer.Option(help="recorded as who promoted")] = None,
    params: ParamsOpt = None,
    set_: SetOpt = None,
) -> None:
    """Make a version champion: refused if it fails the gates or is not shown within
    promotion.margin of the champion's recall on the same images, unless --force --reason."""
    from granvae.tracking import PromotionRefused, TrackingUnavailable, promote

    settings, tracking, policy = _settings(params, set_)
    name = model_name or tracking.model_name
    try:
        rec = promote(name, version, force, reason, user or getpass.getuser(), policy,
                      store=_store(tracking, read_only=True), rule=settings.promotion)  # fmt: skip
    except (PromotionRefused, TrackingUnavailable) as err:
        _fail(str(err))
    forced = " [yellow](forced)[/yellow]" if rec.forced else ""
    console.print(f"{name}: champion is now version {rec.to_version}{forced} ({rec.line()})")
    if rec.note:
        console.print(f"checked {rec.note}", soft_wrap=True)


def rollback_cmd(
    reason: Annotated[str, typer.Option(help="why; recorded with the move")] = "",
    model_name: NameOpt = None,
    user: Annotated[str | None, typer.Option(help="recorded as who rolled back")] = None,
    params: ParamsOpt = None,
    set_: SetOpt = None,
) -> None:
    """Put the previous champion back (from the promotion history)."""
    from granvae.tracking import PromotionRefused, TrackingUnavailable, rollback

    _, tracking, _ = _settings(params, set_)
    name = model_name or tracking.model_name
    try:
        rec = rollback(name, user or getpass.getuser(), reason,
                       store=_store(tracking, read_only=True))
    except (PromotionRefused, TrackingUnavailable) as err:
        _fail(str(err))
    console.print(f"{name}: champion is back to version {rec.to_version} (was {rec.from_version})")


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def models_cmd(
    model_name: NameOpt = None,
    params: ParamsOpt = None,
    set_: SetOpt = None,
    line: Annotated[str | None, typer.Option(help="one product line's model")] = None,
) -> None:
    """List the registered versions with their aliases and headline metrics."""
    from granvae.tracking import TrackingUnavailable, champion_check, list_versions

    _, tracking, policy = _settings(params, set_)
    name = model_name or _line_model(params, line) or tracking.model_name
    try:
        store = _store(tracking, read_only=True)
        rows = list_versions(name, store=store)
        check = champion_check(name, policy, store=store)
    except TrackingUnavailable as err:
        _fail(str(err))
    cols = ("version", "aliases", "recall_at_far", "image_auroc", "elbo", "granularity", "beta",
            "data_version", "status")  # fmt: skip
    table = Table(title=f"{name} ({len(rows)} version{'' if len(rows) == 1 else 's'})")
    for col in cols:
        table.add_column(col)
    for row in rows:
        aliases = ", ".join(row["aliases"])
        table.add_row(*[aliases if c == "aliases" else _cell(row.get(c)) for c in cols])
    Console(width=max(console.width, 132)).print(table)  # readable when piped, too
    if not rows:
        console.print(f"no versions of {name} in this store yet: `granvae retrain` trains and "
                      "registers one (or check --model-name / --line)", soft_wrap=True)
    if check:
        console.print(check, soft_wrap=True)


def _line_model(params: Path | None, line: str | None) -> str | None:
    """The registered model of a product line (granvae/lines.py), or None without --line."""
    if line is None:
        return None
    import yaml

    from granvae.lines import LineError, line_model_name

    path = params or Path("params.yaml")
    try:
        return line_model_name(yaml.safe_load(path.read_text()) if path.exists() else {}, line)
    except LineError as err:
        _fail(str(err))


def ui_cmd(
    host: Annotated[str, typer.Option(help="loopback only")] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 5000,
    params: ParamsOpt = None,
    set_: SetOpt = None,
) -> None:
    """Start the MLflow UI on the embedded store (or say where the real server's UI is)."""
    from granvae.project import require_store
    from granvae.tracking import serve_ui
    from granvae.tracking.store import resolve_uri
    from granvae.tracking.ui import check_port_free

    _, tracking, _ = _settings(params, set_)
    uri = resolve_uri(tracking)
    if uri.startswith(("http://", "https://")):
        console.print(f"tracking goes to a server: open its UI at [bold]{uri}[/bold]")
        return
    try:
        require_store(uri)  # a UI on an empty, new store shows nothing: say where it looked
        check_port_free(host, port)
        url = f"http://{host}:{port}"
        console.print(f"MLflow UI on [bold]{url}[/bold] (store: {uri}); Ctrl-C stops")
        console.print(f"training runs: {_runs_link(tracking, url)}", soft_wrap=True)
        code = serve_ui(tracking.workdir, host, port)
    except (ValueError, FileNotFoundError) as err:
        _fail(str(err))
    raise typer.Exit(code=code)


def _runs_link(tracking, url: str) -> str:
    """The experiment's runs table: MLflow 3's UI opens a bare experiment link on an empty
    GenAI overview in a fresh browser, this link on the candidates' training runs."""
    from granvae.tracking import Store
    from granvae.tracking.ui import runs_url

    return runs_url(url, Store(tracking).experiment_id(tracking.experiment))


def add_commands(app: typer.Typer) -> None:
    """Mount the tracking commands on granvae's main app."""
    app.command("register")(register_cmd)
    app.command("promote")(promote_cmd)
    app.command("rollback")(rollback_cmd)
    app.command("models")(models_cmd)
    app.command("ui")(ui_cmd)
