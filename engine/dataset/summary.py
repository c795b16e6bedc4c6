"""summary.json: what a dataset holds and what it cost, built from its records, its failures and
the plans just rendered. Pure: `folder` writes it beside the format files.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dropflow.engine.dataset.formats import FormatName, Plan, RenderOptions
from dropflow.engine.dataset.records import FailedItem, ItemRecord, by_split

# what summary.json says of each format, by format name: kept as it was for a format whose files
# a render left alone (see `carry_over`)
PER_FORMAT = ("files", "skipped", "offline_left_out")


def _add(total: dict[str, int], usage: dict[str, int]) -> None:
    for key in ("input_tokens", "output_tokens", "image_tokens", "video_tokens"):
        total[key] = total.get(key, 0) + int(usage.get(key, 0) or 0)


def summarize(
    records: Sequence[ItemRecord],
    failures: Sequence[FailedItem],
    opts: RenderOptions,
    plans: Sequence[Plan],
    *,
    updated_at: str,
) -> dict[str, Any]:
    """`summary.json`: items, failures with reasons, tokens (failures included), providers, formats."""
    spent_ok: dict[str, int] = {}
    spent_failed: dict[str, int] = {}
    for rec in records:
        _add(spent_ok, rec.usage)
    for fail in failures:
        _add(spent_failed, fail.usage)
    total = dict(spent_ok)
    _add(total, spent_failed)
    providers = sorted({r.provider for r in records if r.provider})
    models = sorted({r.model for r in records if r.model})
    splits = by_split(records, opts.val_ratio, opts.splits)
    return {
        "dataset": opts.name,
        "updated_at": updated_at,
        "items": len(records),
        "videos": sum(1 for r in records if r.is_video),  # of the items
        "train": len(splits["train"]),
        "validation": len(splits["validation"]),
        "failed": len(failures),
        "failed_items": [
            {
                "source": f.source,
                "hash": f.hash,
                "kind": f.kind,
                "reason": f.reason,
                "hint": f.hint,
                "usage": f.usage,
                "calls": f.calls,
            }
            for f in sorted(failures, key=lambda f: (f.at, f.hash))
        ],
        "tokens": {
            "input": total.get("input_tokens", 0),
            "output": total.get("output_tokens", 0),
            "image": total.get("image_tokens", 0),
            "video": total.get("video_tokens", 0),
            "failed_input": spent_failed.get("input_tokens", 0),
            "failed_output": spent_failed.get("output_tokens", 0),
        },
        "calls": sum(r.calls for r in records) + sum(f.calls for f in failures),
        # items whose answer came from the answer cache (paid for earlier, by them or a copy)
        "cached_items": sum(1 for r in records if r.cached),
        "rejected_answers": sum(len(r.rejected) for r in records),
        "provider": providers[0] if len(providers) == 1 else providers,
        "model": models[0] if len(models) == 1 else models,
        # items whose answer is the offline provider's placeholder: their rows are marked, or left out
        "offline_items": sum(1 for r in records if r.offline),
        "format": [p.format for p in plans],
        # relative to the dataset folder; LLaMA-Factory's entries are in the datasets root's file
        "files": {
            p.format: [f.path for f in p.files] + (["../dataset_info.json"] if p.info else []) for p in plans
        },
        "skipped": {p.format: p.skipped for p in plans if p.skipped},
        "offline_left_out": {p.format: p.offline_left_out for p in plans if p.offline_left_out},
        "val_ratio": opts.val_ratio,
        "record_system": opts.system,
    }


def carry_over(
    summary: dict[str, Any], previous: dict[str, Any], formats: Sequence[FormatName]
) -> dict[str, Any]:
    """`summary` of the formats just rendered, plus what `previous` said of the rest of `formats`
    (their files were left as they were, so what was said of them still holds)."""
    rendered = set(summary["format"])
    out = {**summary, "format": list(formats)}
    for key in PER_FORMAT:
        new, old = summary[key], previous.get(key) or {}
        source = {f: new.get(f) if f in rendered else old.get(f) for f in formats}
        out[key] = {f: v for f, v in source.items() if v is not None}
    return out
