"""`granvae keys ...`: make, rotate and show the Ed25519 pair that signs edge bundles."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

keys_app = typer.Typer(
    no_args_is_help=True,
    help="Bundle-signing keys (private key 0600; copy the .pub.pem to devices).",
)
console = Console()
FolderOption = Annotated[
    Path | None,
    typer.Option("--dir", help="key folder (default: $GRANVAE_KEYS_DIR or ~/.config/granvae/keys)"),
]


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)
    raise typer.Exit(code=2)


@keys_app.command("init")
def keys_init(folder: FolderOption = None) -> None:
    """Make the signing pair (refuses to replace one: rotate instead)."""
    from granvae.signing import SigningKeyError, init_keys

    try:
        pair = init_keys(folder)
    except (SigningKeyError, OSError) as exc:
        _fail(str(exc))
        return
    console.print(f"key {pair.key_id}: private {pair.private} (0600), public {pair.public}",
                  soft_wrap=True)  # fmt: skip
    console.print(f"devices: granvae-edge ... --trusted-key {pair.public}", soft_wrap=True)


@keys_app.command("rotate")
def keys_rotate(folder: FolderOption = None) -> None:
    """New pair; the old public key moves to retired/ (devices may trust it until re-signed)."""
    from granvae.signing import SigningKeyError, rotate_keys

    try:
        old_id, pair = rotate_keys(folder)
    except (SigningKeyError, OSError) as exc:
        _fail(str(exc))
        return
    console.print(f"retired key {old_id}; new key {pair.key_id}: public {pair.public}",
                  soft_wrap=True)  # fmt: skip


@keys_app.command("show")
def keys_show(folder: FolderOption = None) -> None:
    """The key id and public key file of the current pair."""
    from granvae.signing import (
        PRIVATE_FILE,
        PUBLIC_FILE,
        SigningKeyError,
        default_keys_dir,
        key_id,
        load_private_key,
    )

    where = folder or default_keys_dir()
    try:
        key = load_private_key(where / PRIVATE_FILE)
    except SigningKeyError as exc:
        _fail(str(exc))
        return
    console.print(f"key {key_id(key.public_key())}: public {where / PUBLIC_FILE}", soft_wrap=True)


def add_commands(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
