"""``granvae-edge``: verify, score, calibrate, pull and serve bundles (argparse, stdlib only).

Exit codes: 0 success; 1 the command ran but found a problem (bundle refused, some images could
not be scored, or were ``invalid`` under the bundle's frame contract); 2 bad usage or a bundle
that cannot be loaded at all.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from . import __version__, calibrate, cli_line, heatmap, preprocess
from .bundle import BundleError
from .contract import InvalidFrame
from .infer import Inspector
from .manifest import ManifestError
from .signature import SignatureError, TrustStore


def _trust(args: argparse.Namespace) -> TrustStore | None:
    """--trusted-key paths, else $GRANVAE_EDGE_TRUSTED_KEYS, else None (signature unchecked)."""
    return TrustStore.resolve(getattr(args, "trusted_key", None))


def _emit(obj: dict[str, Any]) -> None:
    """One JSON object per line, flushed: a consumer can follow the stream live."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _fail(message: str, code: int = 1) -> int:
    print(f"granvae-edge: {message}", file=sys.stderr)
    return code


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        inspector = Inspector(args.bundle_dir, intra_op_threads=args.threads, trust=_trust(args))
    except Exception as exc:  # every failure is a refusal; say why and exit 1
        return _fail(f"FAIL {args.bundle_dir}: {exc}")
    b = inspector.bundle
    spec = b.manifest["input"]
    t = inspector.tiling
    tiles = (
        f" ({t.n_tiles} tiles of an image {t.image_height}x{t.image_width}, stride {t.stride})"
        if t
        else ""
    )
    print(
        f"OK {b.directory}: revision {b.revision}, model_sha256 {b.model_sha256}, "
        f"input {spec['height']}x{spec['width']}x{spec['channels']} {spec['dtype']}{tiles}, "
        f"threshold {b.threshold}, smoke score on a blank image {inspector.smoke_score:.6g}, "
        + (f"signed by trusted key {b.signed_by}" if b.signed_by else
           "signature NOT checked (no trusted key: --trusted-key or $GRANVAE_EDGE_TRUSTED_KEYS)")
    )  # fmt: skip
    status = inspector.contract_status()
    if isinstance(status, str):
        print(f"note: {status}")
    else:
        sizes = ", ".join(f"{w}x{h}" for h, w in status["source_sizes"])
        print(
            f"frame contract: {status['bit_depth']}-bit window {status['window'][0]}.."
            f"{status['window'][1]}, {status['channels']} channel(s), source sizes {sizes}, "
            f"sanity ranges {status['ranges']}"
        )
    return 0


def _heatmap_path(out_dir: Path, image: Path, used: set[str]) -> Path:
    """<stem>.heatmap.png, de-duplicated when two inputs share a stem."""
    name, k = f"{image.stem}.heatmap.png", 1
    while name in used:
        k += 1
        name = f"{image.stem}-{k}.heatmap.png"
    used.add(name)
    return out_dir / name


def _score_path(
    inspector: Inspector, path: Path, heat_dir: Path | None, used: set[str], capture=None
) -> dict:
    try:
        arr = inspector.prepare(path)
        verdict = inspector.score_batch([arr])[0]
        if capture is not None:  # line loop: keep the file's own bytes with its record
            item_id = cli_line.capture_scored(capture, path, verdict, inspector.bundle)
    except InvalidFrame as exc:
        return {"path": str(path), "verdict": "invalid", "check": exc.check, "error": str(exc)}
    except preprocess.InputError as exc:
        return {"path": str(path), "error": str(exc)}
    except Exception as exc:  # a model failure on one image must not stop the stream
        return {"path": str(path), "error": f"{type(exc).__name__}: {exc}"}
    line: dict[str, Any] = {"path": str(path), **verdict.to_json(inspector.show_group)}
    if capture is not None:
        line["item_id"] = item_id
    if heat_dir is not None:
        target = _heatmap_path(heat_dir, path, used)
        amap = inspector.normalised_map(verdict)
        try:
            line["heatmap"] = str(heatmap.write_overlay(target, arr, amap))
        except (OSError, ValueError) as exc:  # disk full, read-only folder, ...: this item only
            line["heatmap_error"] = f"cannot write {target}: {getattr(exc, 'strerror', 0) or exc}"
    return line


def cmd_score(args: argparse.Namespace) -> int:
    try:
        inspector = Inspector(
            args.bundle, intra_op_threads=args.threads, max_pixels=args.max_pixels,
            trust=_trust(args),
        )  # fmt: skip
    except Exception as exc:
        return _fail(f"cannot load bundle {args.bundle}: {exc}", 2)
    heat_dir = Path(args.heatmaps) if args.heatmaps else None
    used: set[str] = set()
    errors = 0
    try:
        capture = cli_line.capture_from_args(args)
    except (ValueError, OSError) as exc:
        return _fail(f"bad capture option: {exc}", 2)
    try:
        for path in preprocess.list_images(args.paths):
            line = _score_path(inspector, path, heat_dir, used, capture)
            errors += "error" in line or "heatmap_error" in line
            _emit(line)
    finally:
        if capture is not None:
            capture.close()
    return 1 if errors else 0


def _calibration_scores(inspector: Inspector, folder: Path) -> tuple[list[float], list[dict]]:
    scores, skipped = [], []
    for path in preprocess.list_images([folder]):
        try:
            scores.append(inspector.score_one(path).score)
        except preprocess.InputError as exc:
            skipped.append({"path": str(path), "error": str(exc)})
    return scores, skipped


def cmd_calibrate(args: argparse.Namespace) -> int:
    try:
        trust = _trust(args)
        signing_key = calibrate.signing_key_for(args.signing_key, trust)
        inspector = Inspector(args.bundle, intra_op_threads=args.threads, trust=trust)
    except Exception as exc:
        return _fail(f"cannot load bundle {args.bundle}: {exc}", 2)
    folder = Path(args.good_images)
    if not folder.is_dir():
        return _fail(f"--good-images {folder} is not a folder", 2)
    scores, skipped = _calibration_scores(inspector, folder)
    for item in skipped:
        print(f"skipped {item['path']}: {item['error']}", file=sys.stderr)
    try:
        choice = calibrate.order_statistic_threshold(scores, args.false_alarm_rate)
        manifest = inspector.manifest
        updated = calibrate.new_revision(
            manifest, choice, args.false_alarm_rate, str(folder), len(skipped),
            revision=calibrate.next_revision_number(Path(args.bundle), manifest),
        )  # fmt: skip
        kept = calibrate.write_revision(Path(args.bundle), updated, signing_key)
    except (calibrate.CalibrationError, ManifestError, SignatureError, OSError) as exc:
        return _fail(f"calibration failed: {exc}")
    if choice.note:
        print(f"note: {choice.note}", file=sys.stderr)
    _emit(
        {
            "revision": updated["revision"],
            "previous_manifest": str(kept),
            "threshold": updated["threshold"],
            "model_sha256": updated["model_sha256"],
        }
    )
    return 0


def _exit_on_sigterm(_signo: int, _frame: Any) -> None:
    """SIGTERM unwinds like Ctrl-C, so pull's cleanup removes its half-written download."""
    raise SystemExit(143)


def cmd_pull(args: argparse.Namespace) -> int:
    from .auth import AuthError
    from .pull import PullError, pull  # urllib machinery only when pulling

    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        info = pull(
            args.model_uri, args.out, tracking_uri=args.tracking_uri, retries=args.retries,
            max_bytes=args.max_bytes, allow_local=args.allow_local_artifacts,
            trust=_trust(args), credentials=args.credentials,
        )  # fmt: skip
    except (PullError, BundleError, SignatureError, AuthError, OSError) as exc:
        return _fail(f"pull {args.model_uri} failed: {exc}")
    except Exception as exc:  # last line of defence: one line, never a traceback
        return _fail(f"pull {args.model_uri} failed: {type(exc).__name__}: {exc}")
    _emit(info)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .auth import AuthError, load_token
    from .server import ServerLimits, make_server, serve

    try:
        token = load_token(args.token_file)
    except AuthError as exc:
        return _fail(str(exc), 2)
    try:
        limits = ServerLimits(
            max_bytes=args.max_bytes, max_pixels=args.max_pixels, connections=args.connections,
            inflight=args.inflight, queue=args.queue, request_timeout_s=args.request_timeout,
            reload_interval_s=args.reload_interval,
        )  # fmt: skip
        feedback_token = cli_line.token_from_args(args)
        capture = cli_line.capture_from_args(args)
        server = make_server(
            args.bundle, args.host, args.port, intra_op_threads=args.threads,
            verbose=args.verbose, limits=limits, trust=_trust(args), token=token,
            capture=capture, feedback_token=feedback_token,
        )  # fmt: skip
    except AuthError as exc:
        return _fail(str(exc), 2)
    except ValueError as exc:  # a limit out of range, a bad capture option or token file
        return _fail(f"bad serve option: {exc}", 2)
    except OSError as exc:
        return _fail(f"cannot listen on {args.host}:{args.port}: {exc}", 2)
    except Exception as exc:  # BundleError, or a model that fails its smoke inference
        return _fail(f"refusing to serve {args.bundle}: {exc}", 2)
    serve(server)
    return 0


class ServerDefaults:
    """Defaults shown in --help without importing the server module for every command."""

    inflight = max(1, min(4, os.cpu_count() or 1))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="granvae-edge", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    threads = argparse.ArgumentParser(add_help=False)
    threads.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    trust = argparse.ArgumentParser(add_help=False)
    trust.add_argument(
        "--trusted-key",
        action="append",
        default=None,
        metavar="PEM",
        help="public key (or folder of *.pub.pem) bundles must be signed by; repeatable "
        "(default: $GRANVAE_EDGE_TRUSTED_KEYS; none: signatures are not checked)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "verify", parents=[threads, trust], help="check signature, hashes, schema, a smoke run"
    )
    p.add_argument("bundle_dir")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("score", parents=[threads, trust], help="score images, one JSON line each")
    p.add_argument("paths", nargs="+", help="image files or folders")
    p.add_argument("--bundle", required=True)
    p.add_argument("--heatmaps", default=None, help="folder for PNG heatmap overlays")
    p.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="decoded pixels per image (default: from the model's input size)",
    )
    cli_line.add_capture_options(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser(
        "calibrate", parents=[threads, trust], help="re-tune the threshold on good images"
    )
    p.add_argument("--bundle", required=True)
    p.add_argument("--good-images", required=True)
    p.add_argument("--false-alarm-rate", type=float, default=0.01)
    p.add_argument(
        "--signing-key",
        default=None,
        metavar="PEM",
        help="private key that re-signs the new manifest (needed when keys are trusted)",
    )
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser(
        "pull", parents=[trust], help="download a registered bundle from MLflow (REST)"
    )
    p.add_argument("--model-uri", required=True, help="models:/NAME@ALIAS or models:/NAME/N")
    p.add_argument("--out", required=True)
    p.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI")
    p.add_argument("--retries", type=int, default=4)
    p.add_argument(
        "--max-bytes",
        type=int,
        default=2 * 1024**3,
        help="refuse a download larger than this in total (default 2 GiB)",
    )
    p.add_argument(
        "--allow-local-artifacts",
        action="store_true",
        help="copy a file:// artifact source from this machine's disk (off: read it through "
        "the server)",
    )
    p.add_argument(
        "--credentials",
        default=None,
        metavar="FILE",
        help="KEY=VALUE file (mode 600) with MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/"
        "PASSWORD (default: $GRANVAE_EDGE_CREDENTIALS, else those variables themselves)",
    )
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("serve", parents=[threads, trust], help="HTTP scoring server")
    p.add_argument("--bundle", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--max-bytes", type=int, default=16 * 1024 * 1024, help="request body cap")
    p.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="decoded pixels per image (default: from the model's input size)",
    )
    p.add_argument("--connections", type=int, default=64, help="open connections served")
    p.add_argument(
        "--inflight",
        type=int,
        default=ServerDefaults.inflight,
        help="images decoded and scored at once",
    )
    p.add_argument("--queue", type=int, default=32, help="requests waiting for a turn; then 503")
    p.add_argument(
        "--request-timeout",
        type=float,
        default=30.0,
        help="seconds to receive a whole request (line, headers, body)",
    )
    p.add_argument(
        "--token-file",
        default=None,
        metavar="FILE",
        help="file (mode 600) holding the Bearer token POST /reload needs; required to bind a "
        "non-loopback address (default: $GRANVAE_EDGE_TOKEN_FILE)",
    )
    p.add_argument(
        "--reload-interval",
        type=float,
        default=3.0,
        help="seconds between accepted POST /reload; sooner ones get 429",
    )
    p.add_argument("--verbose", action="store_true", help="log every request")
    cli_line.add_capture_options(p)
    p.add_argument(
        "--feedback-token-file",
        default=None,
        help="file holding the operators' Bearer token for POST /feedback "
        "(default: the --token-file token)",
    )
    p.set_defaults(func=cmd_serve)
    cli_line.add_line_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:
        # `granvae-edge score ... | head`: the reader left; stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
