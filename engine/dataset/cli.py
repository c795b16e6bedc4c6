"""`dropflow dataset list | show NAME | export NAME --format F`.

Export re-renders a dataset from its stored item records: no model is called, nothing is paid.
Only light modules are imported here; the rendering code loads when a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dropflow.engine.dataset.formats import FORMAT_NAMES, OFFLINE_MARKER
from dropflow.engine.errors import EXIT_MISSING, EXIT_USAGE

if TYPE_CHECKING:
    from dropflow.daemon.core.config import Config
    from dropflow.engine.dataset.folder import DatasetFolder

ACTIVE = ("queued", "running", "waiting", "paused")


def add_commands(sub: Any) -> None:
    p = sub.add_parser("dataset", help="fine-tuning datasets built from inbox/dataset/<name>/")
    dsub = p.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)

    s = dsub.add_parser("list", help="every dataset with its item, failure and pending-job counts")
    s.add_argument("--json", action="store_true", help="a JSON array, stable for scripts")
    s.set_defaults(fn=cmd_list)

    s = dsub.add_parser(
        "show", help="one dataset's summary: items, split, failures with reasons, tokens, files"
    )
    s.add_argument("name")
    s.add_argument("--json", action="store_true", help="print summary.json as it is")
    s.set_defaults(fn=cmd_show)

    s = dsub.add_parser(
        "export",
        help="re-render a dataset in another format from its stored records (calls no model)",
        description="Renders the named format(s) from outputs/dataset/NAME/.records; the format is kept "
        "up to date by the daemon from then on (it is listed in summary.json). The files of the other "
        "formats are left as they are, unless --val-ratio or --no-system changes their rows.",
    )
    s.add_argument("name")
    s.add_argument(
        "--format",
        "-f",
        dest="formats",
        action="append",
        required=True,
        choices=FORMAT_NAMES,
        help="format to write (repeatable)",
    )
    s.add_argument(
        "--val-ratio", type=float, help="validation share, 0..0.5 (default: the dataset's current one)"
    )
    s.add_argument(
        "--no-system", action="store_true", help="leave the system turn (record_system) out of the rows"
    )
    s.add_argument(
        "--include-offline",
        action="store_true",
        help="put offline placeholder items into the openai file too (its rows cannot be marked)",
    )
    s.set_defaults(fn=cmd_export)


def _root(cfg: Config) -> Path:
    return cfg.paths.outputs / "dataset"


def _folder(cfg: Config, name: str) -> DatasetFolder | None:
    from dropflow.engine.dataset.folder import RECORDS, DatasetFolder

    root = _root(cfg) / name
    if "/" in name or name in ("", ".", "..") or not (root / RECORDS).is_dir():
        return None
    return DatasetFolder(root)


def _pending(cfg: Config) -> dict[str, Counter[str]]:
    """Jobs of each dataset that are not finished yet, by status."""
    from dropflow.daemon.core.store import with_store
    from dropflow.engine.dataset.folder import DEFAULT_DATASET

    jobs = with_store(cfg, lambda s: s.list(engine="dataset", status=ACTIVE))
    out: dict[str, Counter[str]] = {}
    for job in jobs:
        if job.input_path.lower().endswith(".zip"):
            continue  # a ZIP is not an item; its images are
        out.setdefault(job.batch or DEFAULT_DATASET, Counter())[job.status] += 1
    return out


def _missing(cfg: Config, name: str) -> int:
    known = (
        ", ".join(sorted(p.name for p in _root(cfg).iterdir() if p.is_dir())) if _root(cfg).is_dir() else ""
    )
    print(f"no dataset {name!r} in {_root(cfg)}" + (f" (known: {known})" if known else ""), file=sys.stderr)
    return EXIT_MISSING


def cmd_list(args: argparse.Namespace) -> int:
    from dropflow.daemon.core.config import find_config, load
    from dropflow.engine.dataset.folder import RECORDS

    cfg = load(find_config(args.config))
    pending = _pending(cfg)
    names = set(pending)
    if _root(cfg).is_dir():
        names |= {p.name for p in _root(cfg).iterdir() if (p / RECORDS).is_dir()}
    rows = []
    for name in sorted(names):
        folder = _folder(cfg, name)
        summary = (folder.summary() if folder else None) or {}
        items = len(folder.records()) if folder else 0
        rows.append(
            {
                "name": name,
                "items": items,
                "failed": summary.get("failed", 0),
                "pending": sum(pending.get(name, Counter()).values()),
                "format": summary.get("format", []),
                "path": str(_root(cfg) / name),
            }
        )
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=1))
        return 0
    if not rows:
        print(f"no datasets yet: drop images into {cfg.paths.inbox / 'dataset'}/<name>/")
        return 0
    print(f"{'DATASET':<24} {'ITEMS':>6} {'FAILED':>6} {'PENDING':>7}  FORMATS")
    for r in rows:
        print(f"{r['name']:<24} {r['items']:>6} {r['failed']:>6} {r['pending']:>7}  {', '.join(r['format'])}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from dropflow.daemon.core.config import find_config, load

    cfg = load(find_config(args.config))
    folder = _folder(cfg, args.name)
    if folder is None:
        return _missing(cfg, args.name)
    summary = folder.summary()
    if summary is None:
        print(f"dataset {args.name!r} has records but no summary.json yet: run `dropflow dataset export`")
        return 0
    if args.json:
        print(json.dumps(summary, ensure_ascii=False, indent=2))
        return 0
    pending = _pending(cfg).get(args.name, Counter())
    tokens = summary.get("tokens", {})
    print(f"dataset {args.name}  ({folder.root})")
    videos = f", {summary['videos']} videos" if summary.get("videos") else ""
    print(
        f"  items:    {summary['items']}  (train {summary['train']}, validation {summary['validation']}{videos})"
    )
    if pending:
        print("  pending:  " + ", ".join(f"{n} {status}" for status, n in sorted(pending.items())))
    print(f"  provider: {summary.get('provider')}  model {summary.get('model')}")
    _offline(summary)
    print(
        f"  tokens:   {tokens.get('input', 0):,} in, {tokens.get('output', 0):,} out"
        f" (failures: {tokens.get('failed_input', 0):,} in, {tokens.get('failed_output', 0):,} out)"
    )
    for fmt, paths in summary.get("files", {}).items():
        print(f"  {fmt + ':':<13} {', '.join(paths)}")
    for fmt, skipped in summary.get("skipped", {}).items():
        print(f"  skipped in {fmt}: {len(skipped)} (e.g. {skipped[0]['source']}: {skipped[0]['reason']})")
    failed = summary.get("failed_items", [])
    if failed:
        print(f"  failed:   {len(failed)}")
        for f in failed[:20]:
            print(f"    {f['source']}: [{f['kind']}] {f['reason'].splitlines()[0]}")
        if len(failed) > 20:
            print(f"    ... {len(failed) - 20} more in summary.json")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from dropflow.daemon.core.config import find_config, load
    from dropflow.engine.dataset.formats import RenderOptions

    cfg = load(find_config(args.config))
    folder = _folder(cfg, args.name)
    if folder is None:
        return _missing(cfg, args.name)
    previous = folder.summary() or {}
    val_ratio = args.val_ratio if args.val_ratio is not None else float(previous.get("val_ratio", 0.0))
    if not 0 <= val_ratio <= 0.5:
        print("--val-ratio must be between 0 and 0.5", file=sys.stderr)
        return EXIT_USAGE
    system = None if args.no_system else previous.get("record_system")
    options = RenderOptions(
        name=folder.name,
        root=folder.root,
        val_ratio=val_ratio,
        system=system if isinstance(system, str) else None,
        offline_in_openai=args.include_offline,
    )
    formats = list(dict.fromkeys(args.formats))
    result = folder.render(formats, options, only=True)
    summary = result.summary
    print(f"dataset {folder.name}: {summary['items']} item(s) rendered from stored records (no model called)")
    others = [f for f in result.rendered if f not in formats]
    if others:
        print(
            f"  also rewrote {', '.join(others)}: the split or the system turn changed, and all formats agree"
        )
    for fmt in result.rendered:
        paths = summary["files"].get(fmt, [])
        print(f"  {fmt}: " + ", ".join(str(folder.root / p) for p in paths))
        for skip in summary["skipped"].get(fmt, []):
            print(f"    skipped {skip['source']}: {skip['reason']}")
    _offline(summary)
    return 0


def _offline(summary: dict[str, Any]) -> None:
    """Say loudly that placeholder items are in the dataset, and where their rows went."""
    n = summary.get("offline_items", 0)
    if not n:
        return
    print(
        f"  offline:  {n} of {summary['items']} item(s) hold the offline provider's placeholder text, "
        f'not model output; their rows carry "{OFFLINE_MARKER}": true'
    )
    left_out = summary.get("offline_left_out", {})
    for fmt, count in left_out.items():
        print(f"            left out of {fmt}: {count} (it cannot mark them; --include-offline puts them in)")
    if "openai" in summary.get("format", []) and "openai" not in left_out:
        print("            in openai unmarked (exported with --include-offline)")
