"""A batch's contact sheets, its overview and clusters.json.

All are re-rendered from the database: after each job, and after the CLI renames or merges persons.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dropflow.engine import files
from dropflow.engine.cluster.params import REPORT, SHEETS

if TYPE_CHECKING:
    from dropflow.daemon.core.persons import PersonsRepository


# --- pictures ---------------------------------------------------------------------------------------


def contact_sheet(thumbs: Sequence[bytes], title: str, *, tile: int = 112, columns: int = 6) -> bytes:
    """A JPEG grid of face crops with the person's folder name on top."""
    from PIL import Image, ImageDraw

    columns = max(1, min(columns, len(thumbs) or 1))
    rows = max(1, -(-len(thumbs) // columns))
    pad, head = 4, 24
    sheet = Image.new("RGB", (columns * (tile + pad) + pad, head + rows * (tile + pad) + pad), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    draw.text((pad + 2, 6), title, fill=(235, 235, 235))
    for i, data in enumerate(thumbs):
        with Image.open(io.BytesIO(data)) as im:
            face = im.convert("RGB").resize((tile, tile))
        r, c = divmod(i, columns)
        sheet.paste(face, (pad + c * (tile + pad), head + pad + r * (tile + pad)))
    buf = io.BytesIO()
    sheet.save(buf, format="JPEG", quality=88)
    return buf.getvalue()


def overview_sheet(entries: Sequence[tuple[str, bytes | None]]) -> bytes:
    """One tile per person (its best face) with its folder name underneath."""
    from PIL import Image, ImageDraw

    tile = 96 if len(entries) <= 400 else 64
    label = 14
    columns = max(1, min(12 if tile == 96 else 24, len(entries)))
    rows = max(1, -(-len(entries) // columns))
    pad = 4
    sheet = Image.new("RGB", (columns * (tile + pad) + pad, rows * (tile + label + pad) + pad), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    for i, (name, data) in enumerate(entries):
        r, c = divmod(i, columns)
        x, y = pad + c * (tile + pad), pad + r * (tile + label + pad)
        if data:
            with Image.open(io.BytesIO(data)) as im:
                sheet.paste(im.convert("RGB").resize((tile, tile)), (x, y))
        draw.text((x + 1, y + tile + 1), name[: tile // 6], fill=(235, 235, 235))
    buf = io.BytesIO()
    sheet.save(buf, format="JPEG", quality=88)
    return buf.getvalue()


async def refresh_batch(
    repo: PersonsRepository, batch: str, batch_dir: Path, folders: set[str], sheet_faces: int = 36
) -> Path:
    """Re-render the contact sheets of `folders` (and any missing one), the overview and
    clusters.json from the database; returns the clusters.json path."""
    persons = await repo.persons(batch)
    sheets = batch_dir / SHEETS
    for p in persons:
        if p.folder in folders or not (sheets / f"{p.folder}.jpg").exists():
            data = contact_sheet(await repo.thumbs(p.id, sheet_faces), p.folder)
            await asyncio.to_thread(files.write_bytes, sheets / f"{p.folder}.jpg", data)
    best = [(p.folder, next(iter(await repo.thumbs(p.id, 1)), None)) for p in persons]
    await asyncio.to_thread(files.write_bytes, sheets / "overview.jpg", overview_sheet(best))
    await asyncio.to_thread(_remove_stale_sheets, sheets, {p.folder for p in persons})
    report = await repo.report(batch)
    report = {"batch": batch, "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **report}
    return await asyncio.to_thread(files.write_json, batch_dir / REPORT, report)


def _remove_stale_sheets(sheets: Path, folders: set[str]) -> None:
    for f in sheets.glob("*.jpg"):
        if f.stem != "overview" and f.stem not in folders:
            f.unlink(missing_ok=True)
