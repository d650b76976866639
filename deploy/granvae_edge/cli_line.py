"""``granvae-edge`` options and commands of the line loop: capture flags, feedback, ship."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .capture import Capture, CaptureConfig
from .feedback import KINDS, FeedbackError, record_feedback
from .feedback_token import load_token
from .ship import ShipError, landing_for, ship
from .spool import SpoolBounds


def add_capture_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("capture (line loop, docs/line-loop.md)")
    g.add_argument("--capture", default=None, metavar="SPOOL",
                   help="keep rejects, invalid frames and a share of passes in this spool")
    g.add_argument("--pass-share", type=float, default=0.05, help="share of passes kept")
    g.add_argument("--spool-max-bytes", type=int, default=2 * 1024**3)
    g.add_argument("--spool-max-files", type=int, default=20_000)
    g.add_argument("--capture-queue", type=int, default=256, metavar="N",
                   help="frames waiting for the spool's disk; beyond it images are dropped "
                        "(counted), inspection records are not")
    g.add_argument("--device-name", default="device", help="recorded with every item")
    g.add_argument("--line", default="line", help="product line, recorded with every item")


def capture_from_args(args: argparse.Namespace) -> Capture | None:
    """A running Capture when --capture was given (ValueError on a bad option)."""
    if not args.capture:
        return None
    bounds = SpoolBounds(max_bytes=args.spool_max_bytes, max_files=args.spool_max_files)
    return Capture(CaptureConfig(spool=args.capture, device=args.device_name, line=args.line,
                                 pass_share=args.pass_share, bounds=bounds,
                                 queue_size=args.capture_queue))  # fmt: skip


def token_from_args(args: argparse.Namespace) -> str | None:
    return load_token(args.feedback_token_file) if args.feedback_token_file else None


def cmd_feedback(args: argparse.Namespace) -> int:
    payload = {"item_id": args.item_id, "verdict": args.verdict,
               "defect_class": args.defect_class, "operator": args.operator}  # fmt: skip
    try:
        stored = record_feedback(args.spool, payload)
    except (FeedbackError, OSError) as exc:
        print(f"granvae-edge: feedback refused: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(stored))
    return 0


def cmd_ship(args: argparse.Namespace) -> int:
    try:
        report = ship(args.spool, landing_for(args.to, args.endpoint_url))
    except (ShipError, OSError) as exc:
        print(f"granvae-edge: ship failed: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_json()))
    for error in report.errors:
        print(f"granvae-edge: not shipped: {error}", file=sys.stderr)
    return 1 if report.errors else 0


def add_line_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("feedback", help="record an operator's verdict on a captured item")
    p.add_argument("item_id")
    p.add_argument("--spool", required=True)
    p.add_argument("--verdict", required=True, choices=KINDS)
    p.add_argument("--class", dest="defect_class", default=None,
                   help="defect class (required for real_defect and missed_defect)")
    p.add_argument("--operator", default=None)
    p.set_defaults(func=cmd_feedback)

    p = sub.add_parser("ship", help="move the spool to the landing zone (idempotent)")
    p.add_argument("--spool", required=True)
    p.add_argument("--to", required=True,
                   help="landing zone: a folder, or s3://bucket/prefix (needs boto3)")
    p.add_argument("--endpoint-url", default=None,
                   help="S3 endpoint (MinIO, a local test server); default AWS_ENDPOINT_URL")
    p.set_defaults(func=cmd_ship)


def capture_scored(capture: Capture, path: Path, verdict, bundle) -> str:  # noqa: ANN001
    """`score --capture`: the file's bytes go to the spool with the verdict's record."""
    from .line_loop import capture_verdict

    return capture_verdict(capture, Path(path).read_bytes(), verdict, bundle)
