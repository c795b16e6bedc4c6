"""A cluster job's parameters, and the batch it feeds.

`ClusterParams` is what a job is told. Its results go to outputs/cluster/<batch>/: the person
folders, and the fixed folders and files named here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from dropflow.engine.base import Params
from dropflow.engine.media import DEFAULT_MAX_PIXELS

UNSORTED, NO_FACES, UNREADABLE, SHEETS = "unsorted", "no_faces", "unreadable", "contact_sheets"
REPORT = "clusters.json"
DEFAULT_EXCLUDED = ("общие",)  # `exclude_folders` unless set


class ClusterParams(Params):
    into: str | None = Field(
        None, description="Add the photos to this existing batch instead of one named after the folder/ZIP."
    )
    model_root: str | None = Field(
        None, description="Folder holding models/<pack>/ (default: insightface's own, ~/.insightface)."
    )
    model_pack: str = Field(
        "buffalo_l", description="InsightFace model pack (detection + recognition are used)."
    )
    download_models: bool = Field(
        False, description="Let insightface download a missing pack (needs internet)."
    )
    device: Literal["cpu", "cuda"] = Field(
        "cpu", description="onnxruntime device; cuda falls back to cpu if absent."
    )
    det_size: int = Field(
        640,
        ge=128,
        le=2048,
        multiple_of=32,
        description="Detector input size (pixels, square, a multiple of 32).",
    )
    det_threshold: float = Field(0.5, gt=0, lt=1, description="Minimum detection score of a face.")
    min_face_size: int = Field(0, ge=0, description="Ignore faces whose box is smaller than this (pixels).")
    min_cluster_size: int = Field(2, ge=2, description="HDBSCAN min_cluster_size: faces needed for a person.")
    min_samples: int = Field(1, ge=1, description="HDBSCAN min_samples.")
    cluster_selection_epsilon: float = Field(
        1.0,
        ge=0,
        le=2,
        description="HDBSCAN cluster_selection_epsilon (1.0 = cosine 0.5): keeps bursts in one person.",
    )
    member_similarity: float = Field(
        0.3,
        ge=-1,
        lt=1,
        description="A face whose closest face in its person is less similar than this is unsorted.",
    )
    join_threshold: float = Field(
        0.5,
        gt=-1,
        lt=1,
        description="Cosine similarity to a person's mean at which a later face joins that person.",
    )
    exclude_folders: list[str] = Field(
        default_factory=lambda: list(DEFAULT_EXCLUDED),
        description="Folder names skipped (left in place), any depth.",
    )
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, gt=0, description="Photos with more pixels are unreadable.")
    sheet_faces: int = Field(36, ge=1, le=400, description="Faces on a person's contact sheet.")

    @field_validator("into")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        clean = value.strip()
        if not clean or clean in (".", "..") or clean.startswith(".") or "/" in clean or "\\" in clean:
            raise ValueError("must be a plain folder name (no '/', not starting with '.')")
        return clean


def batch_name(job_batch: str, input_path: str, into: str | None) -> str:
    """The batch (output folder) a job feeds: `into`, else the unit's name without `.zip`."""
    if into:
        return into
    name = job_batch or Path(input_path).name
    return name[:-4] if name.lower().endswith(".zip") else name
