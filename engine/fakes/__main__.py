"""``python -m dropflow.engine.fakes KIND [options]``: run one fake until SIGTERM / SIGINT.

The first stdout line is the base URL a provider's ``base_url`` setting should hold.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from dropflow.engine.fakes import FAKES, FakeDashScope


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dropflow.engine.fakes", description=__doc__)
    parser.add_argument("kind", choices=sorted(FAKES))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", default="test-key", help="the only key the fake accepts")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    parser.add_argument("--rate-limit", type=int, default=None, help="requests per --rate-window, then 429")
    parser.add_argument("--rate-window", type=float, default=1.0)
    parser.add_argument(
        "--pending-seconds", type=float, default=0.5, help="dashscope, ark: task PENDING (queued) this long"
    )
    parser.add_argument(
        "--running-seconds", type=float, default=1.0, help="dashscope, ark: then RUNNING this long"
    )
    parser.add_argument("--fail-downloads", type=int, default=0, help="dashscope: the first N downloads fail")
    parser.add_argument(
        "--access-key-id", default="LTAI-test", help="quanmiao, oss: the AccessKey id accepted"
    )
    parser.add_argument(
        "--access-key-secret", default="secret-test-0123456789", help="quanmiao: the secret it signs with"
    )
    parser.add_argument("--workspace", default="llm-test", help="quanmiao: the Bailian workspace id")
    parser.add_argument("--bucket", default="dropflow-test", help="oss: the bucket's name")
    args = parser.parse_args(argv)

    kwargs: dict[str, Any] = {
        "api_key": args.api_key,
        "latency": args.latency,
        "rate_limit": args.rate_limit,
        "rate_window": args.rate_window,
        "host": args.host,
        "port": args.port,
    }
    if args.kind in ("dashscope", "ark"):
        kwargs.update(pending_seconds=args.pending_seconds, running_seconds=args.running_seconds)
    if args.kind == "quanmiao":
        kwargs.update(
            pending_seconds=args.pending_seconds,
            running_seconds=args.running_seconds,
            access_keys={args.access_key_id: args.access_key_secret},
            workspace=args.workspace,
        )
    if args.kind == "oss":
        kwargs.update(bucket=args.bucket, access_key_id=args.access_key_id)
    server = FAKES[args.kind](**kwargs)
    stop = threading.Event()
    # handlers only set the flag; the main thread does the shutdown
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with server:
        if args.fail_downloads and isinstance(server, FakeDashScope):
            server.fail_downloads(args.fail_downloads)
        print(server.base_url, flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
