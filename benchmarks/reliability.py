"""Regenerate docs/reliability.md: run the fault-injection suite and the serve benchmark.

    python benchmarks/reliability.py            # or: make reliability

Runs ``pytest tests/reliability`` (the same suite CI runs), reads each case's outcome from its
JUnit XML, runs benchmarks/serve.py (1 and 16 clients), and writes one page: every case tried,
what was expected, what happened, and the load figures. Nothing in the page is typed by hand.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for sub in ("deploy", "tests", "tests/reliability"):
    sys.path.insert(0, str(REPO / sub))

from test_reliability_http import CASES as HTTP_CASES  # noqa: E402
from test_reliability_pull import CASES as PULL_CASES  # noqa: E402

FRAME_TESTS = {"CLI": "test_cli_gives_every_frame_its_verdict",
               "HTTP": "test_http_gives_every_frame_its_verdict_and_counts_invalid"}  # fmt: skip

DEFECTS = [
    ("1", "NaN/Infinity threshold accepted by verify, score, serve, pull",
     ["test_non_finite_threshold_is_refused_everywhere", "NaN threshold", "Infinity threshold",
      "test_non_finite_number_anywhere_is_named"]),
    ("2", "pull --out deleted whatever the folder held",
     ["test_out_folder_with_user_files_is_refused",
      "test_pull_refuses_an_out_folder_holding_user_files"]),
    ("3", "~44 ms Nagle stall per keep-alive request",
     ["test_response_head_and_body_leave_in_one_write", "serve benchmark below"]),
    ("4", "no decoded-pixel cap, no bound on concurrent requests",
     ["pixel bomb (62 KB -> 64 MP)", "test_memory_stays_bounded_under_bombs_and_large_images",
      "test_connection_bound_answers_503_json", "test_admission_queue_and_wait_are_bounded"]),
    ("5", "pull had no size limit and held whole files",
     ["test_size_cap_refuses_before_holding_the_file"]),
    ("6", "pull followed file:// artifact URIs", ["file:// artifact URI",
                                                   "test_healthy_registry_still_installs"]),
    ("7", "half-written downloads left after SIGTERM/SIGKILL",
     ["test_killed_pull_leaves_nothing_behind_after_the_next_pull",
      "test_concurrent_pull_folder_is_not_removed"]),
    ("8", "malformed registry answers gave tracebacks; truncation said sha256",
     ["registry answer table below", "test_cli_pull_errors_are_one_line_without_traceback"]),
    ("9", "one heatmap failure aborted score; folders skipped gif/extensionless/links/pages",
     ["test_one_failing_heatmap_write_does_not_stop_the_batch",
      "test_folder_scoring_gives_every_file_a_line"]),
    ("10", "HTML error pages (501, 431), no HEAD, object reprs, BrokenPipe traceback",
     ["HTTP request table below", "test_head_healthz_has_headers_and_no_body",
      "test_score_piped_into_head_exits_quietly"]),
    ("11", "read timeout per read, not per request",
     ["test_slow_sender_is_cut_at_the_whole_request_deadline"]),
]  # fmt: skip


def run_suite(xml_path: Path) -> tuple[int, dict[str, tuple[str, float]]]:
    """pytest tests/reliability -> {test id: (outcome, seconds)} from its JUnit XML."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "tests/reliability", f"--junitxml={xml_path}"]  # fmt: skip
    env = {**os.environ, "GRANVAE_RELIABILITY_FULL": "1"}  # every flow stage, not CI's subset
    code = subprocess.run(cmd, cwd=REPO, env=env, check=False).returncode
    results: dict[str, tuple[str, float]] = {}
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        outcome = "pass"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "FAIL"
            elif child.tag == "skipped":
                outcome = "skipped"
        results[case.get("name", "?")] = (outcome, float(case.get("time", 0)))
    return code, results


def run_serve_benchmark(json_path: Path, seconds: float) -> dict:
    cmd = [sys.executable, str(REPO / "benchmarks" / "serve.py"), "--seconds", str(seconds),
           "--json", str(json_path)]  # fmt: skip
    subprocess.run(cmd, cwd=REPO, check=True)
    return json.loads(json_path.read_text())


def _outcome(results: dict, test: str, case: str | None = None) -> str:
    key = f"{test}[{case}]" if case else test
    return results.get(key, ("not run", 0.0))[0]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return out + ["| " + " | ".join(r).replace("\n", " ") + " |" for r in rows]


def _ok(outcome: str) -> str:
    """A test outcome that cannot be misread as the verdict "pass"."""
    return "ok" if outcome == "pass" else outcome


def frames_section(results: dict) -> list[str]:
    """Issue 15's table: every frame the model was not trained to see, per bundle kind and
    entry point (tests/reliability/test_frames.py asserts a whole table in one test)."""
    from test_frames import TILED, WHOLE, cases, twelve_bit_cases

    lines = ["## Frames the model was not trained to see (issue 15)", "",
             "`tests/reliability/test_frames.py`: the fixture model with a hand-written frame",
             "contract (working size, source size 2x, 8-bit or 12-bit window, sanity ranges mean",
             "100..156, contrast 15..60, sharpness 10..150). No frame may get a silent `pass`:",
             "`invalid` is HTTP 422 and an `invalid` CLI line, counted in /metrics `verdicts`.",
             ""]  # fmt: skip
    names = [(n, v, c) for n, _, v, c in cases(WHOLE)]
    names += [(n, v, c) for n, _, v, c in twelve_bit_cases(WHOLE)]
    header = ["frame", "expected verdict"] + [f"{e} {k} (test)" for e in FRAME_TESTS
                                               for k in ("whole", "tiled")]  # fmt: skip
    rows = []
    for name, verdict, check in names:
        expected = f"`{verdict}`" + (f" ({check})" if check else "")
        rows.append([name, expected] + [_ok(_outcome(results, t, k)) for t in FRAME_TESTS.values()
                                        for k in ("whole", "tiled")])  # fmt: skip
    lines += _table(header, rows)
    lines += ["", f"Working sizes: whole-image {WHOLE} px, tiled {TILED} px (32-px tiles).",
              "FIFOs, dangling links, link loops and linked folders: "
              f"`{_ok(_outcome(results, 'test_fifo_and_links_get_one_line_each_and_never_block'))}`"
              " (one error line each, never a hang). Decoding bombs against the stated bound "
              "`inflight x max_pixels x 12 bytes` (peak RSS of a real process):", ""]  # fmt: skip
    bomb = "test_decoding_bombs_stay_inside_the_stated_bound"
    lines += _table(["bomb (8 M pixels)", "no contract", "contract (refused from header)"],
                    [[b, _ok(_outcome(results, bomb, f"{b}-no-contract")),
                      _ok(_outcome(results, bomb, f"{b}-contract"))]
                     for b in ("bomb16.png", "strip.png")])  # fmt: skip
    conc = "test_concurrent_requests_stay_inside_inflight_times_the_bound"
    lines += ["", f"4 concurrent 16-bit bombs, inflight 2: `{_ok(_outcome(results, conc))}`.",
              "", "Measured peak RSS above a small frame's, per decoded pixel "
              "(`python benchmarks/decode_memory.py deploy`; 8 M-pixel files, no contract, so "
              "they are decoded): deploy/README.md, \"Memory\".", ""]  # fmt: skip
    return lines


def render(results: dict, suite_code: int, bench: dict, seconds: float) -> str:
    http_test = "test_bad_request_gets_json_error_and_server_keeps_serving"
    pull_test = "test_malformed_registry_answer_is_one_clear_error"
    total = sum(t for _, t in results.values())
    failed = [k for k, (o, _) in results.items() if o == "FAIL"]
    lines = [
        "# Reliability: fault injection on the edge runtime",
        "",
        "Generated by `python benchmarks/reliability.py` (or `make reliability`); do not edit by",
        f"hand. Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {bench['machine']}.",
        "",
        f"Suite: `pytest tests/reliability`: {len(results)} cases, {len(failed)} failed, "
        f"{total:.1f} s of test time (exit code {suite_code}).",
        "",
        "## Defects of issue 9 and the tests that pin them",
        "",
        "Each of these tests was run against the runtime as it was before the fixes (commit",
        "3b53f1f) and failed there; the slow-sender case was checked by hand on that code (a",
        "1-byte-per-0.3 s sender still held its thread after 6.5 s with a 1 s read timeout).",
        "",
    ]
    lines += _table(["#", "defect", "tests"], [[n, d, ", ".join(f"`{t}`" for t in ts)]
                                               for n, d, ts in DEFECTS])  # fmt: skip
    lines += ["", "## Bad HTTP requests (`POST /score` unless the case says otherwise)", "",
              "Each answer must be JSON, carry the status and the message below, and the server",
              "must answer a good image right after.", ""]  # fmt: skip
    lines += _table(
        ["case", "expected status", "message contains", "outcome"],
        [[name, str(status), f"`{needle}`", _outcome(results, http_test, name)]
         for name, (_, status, needle) in HTTP_CASES.items()],
    )  # fmt: skip
    lines += ["", "## Registry answers during `pull`", "",
              "Each must raise one line naming the problem; the installed bundle stays",
              "byte-for-byte intact and no temp folder is left beside it.", ""]  # fmt: skip
    lines += _table(
        ["case", "message contains", "outcome"],
        [[name, f"`{needle}`", _outcome(results, pull_test, name)]
         for name, (_, needle) in PULL_CASES.items()],
    )  # fmt: skip
    lines += [""] + frames_section(results)
    others = sorted(k for k in results if not k.startswith((http_test, pull_test)))
    lines += ["## Other cases", ""]
    lines += _table(
        ["test", "outcome", "seconds"],
        [[f"`{k}`", results[k][0], f"{results[k][1]:.2f}"] for k in others],
    )
    lines += [
        "",
        "## Serve benchmark",
        "",
        f"`python benchmarks/serve.py --seconds {seconds:g}`: `granvae-edge serve` in its own",
        "process, keep-alive HTTP/1.1 clients on 127.0.0.1 posting the same small PNG to the",
        "32x32 fixture model (so the figures are the server's overhead). Targets: 1 client",
        ">= 200 req/s at p50 <= 3 ms; 16 clients >= 400 req/s at p99 <= 50 ms.",
        "",
    ]
    lines += _table(
        ["clients", "requests", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms"],
        [[str(r[k]) for k in ("clients", "requests", "errors", "req_per_s", "p50_ms", "p95_ms",
                              "p99_ms")] for r in bench["rows"]],
    )  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "reliability.md")
    ap.add_argument("--seconds", type=float, default=5.0, help="per serve-benchmark phase")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        code, results = run_suite(Path(tmp) / "junit.xml")
        bench = run_serve_benchmark(Path(tmp) / "serve.json", args.seconds)
    args.out.write_text(render(results, code, bench, args.seconds))
    print(f"wrote {args.out} ({len(results)} cases, suite exit code {code})")
    return code


if __name__ == "__main__":
    sys.exit(main())
