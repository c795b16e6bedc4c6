"""The annotate engine's parameters: `AnnotateParams` (with its bounds) and the `Role` it lists."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dropflow.engine.base import Params

MIN_FRAMES = 4  # DashScope refuses a frame list shorter than this: short clips repeat their frames


class Role(BaseModel):
    """A character to keep consistent across segments (Bailian's videoRoles)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="The name the model should use.")
    description: str = Field("", description="Who this is / how to recognise them.")
    photos: list[str] = Field(
        default_factory=list,
        description="Reference photos: paths (beside the video, else in the prompts folder) or https URLs.",
    )


BailianOutput = Literal["videoAnalysis", "videoGenerate", "videoTitleGenerate", "videoMindMappingGenerate"]


class BailianOptions(BaseModel):
    """What only `mode: bailian` (Bailian's hosted video analysis) reads; the rest maps from the
    common params: model -> videoModelId, summary_model -> modelId, segment_prompt /
    summary_prompt -> the two custom templates, interval (or fps) and max_side -> frameSampleMethod,
    roles -> videoRoles, extra_info -> videoExtraInfo, language -> language."""

    model_config = ConfigDict(extra="forbid")

    generate_options: list[BailianOutput] = Field(
        default_factory=lambda: ["videoAnalysis", "videoGenerate"],  # type: ignore[arg-type]
        min_length=1,
        description="Results to make: videoAnalysis (per shot), videoGenerate (the summary), "
        "videoTitleGenerate, videoMindMappingGenerate.",
    )
    summary_template_id: str | None = Field(
        None, description="A summary template saved in the Bailian console (modelCustomPromptTemplateId)."
    )
    service_templates: bool = Field(
        False, description="Send no templates of ours: the service's default prompts apply."
    )
    poll_first_seconds: float = Field(
        5.0, ge=0.05, le=600, description="First status check after submitting."
    )
    poll_max_seconds: float = Field(
        60.0, ge=0.05, le=3600, description="Longest pause between status checks."
    )
    deadline_minutes: float = Field(
        180.0, gt=0, le=24 * 60, description="Stop following a task still unfinished after this long."
    )


class AnnotateParams(Params):
    """Parameters of the annotate engine (route `params`, a folder's dropflow.yaml, or `--set`)."""

    model: str = Field(
        "qwen-vl-max-latest", description="Vision model: qwen-vl-max-latest, qwen-vl-plus-latest, qwen3-vl-*."
    )
    prompt: str = Field(
        "pov_annotation_prompt.txt",
        description="Prompt template (single mode): a name in prompts/ or a path.",
    )
    fps: float = Field(1.0, ge=0.1, le=10.0, description="Frames sampled per second of video.")
    interval: float | None = Field(
        None, ge=0.1, le=10.0, description="Seconds between sampled frames; overrides fps when set."
    )
    max_side: int = Field(768, ge=300, le=768, description="Longest side of a frame sent, in pixels.")
    jpeg_quality: int = Field(85, ge=30, le=100, description="JPEG quality of the frames sent.")
    temperature: float = Field(0.3, ge=0.0, le=1.0, description="Sampling temperature.")
    max_tokens: int = Field(4000, ge=1, le=32768, description="Longest answer per request, in tokens.")
    dedup: bool = Field(
        True, description="Drop near-duplicate consecutive frames (static shots) before sending."
    )
    dedup_threshold: int = Field(
        3, ge=0, le=64, description="Hash bits (of 256) that may differ for a frame to count as a repeat."
    )
    max_frames_per_segment: int = Field(
        80, ge=MIN_FRAMES, le=768, description="Frames per request; longer videos are split into segments."
    )
    segment_seconds: float | None = Field(
        None, gt=0, description="Also start a new segment after this many seconds (finer shot analysis)."
    )
    max_total_frames: int = Field(
        3600, ge=1, description="Frames kept per video at most; a longer video fails with a hint."
    )
    mode: Literal["single", "two_stage", "bailian"] = Field(
        "single",
        description="single: one prompt per segment; two_stage: segment analysis, then a summary; "
        "bailian: the same two stages run by Bailian's hosted video analysis (providers.bailian).",
    )
    segment_prompt: str = Field("segment_analysis.txt", description="Two-stage: the per-segment template.")
    summary_prompt: str = Field("summary.txt", description="Two-stage: the summary template.")
    summary_model: str = Field("qwen-max", description="Two-stage: the text model of the summary pass.")
    language: str | None = Field(None, description="Language of the answers, e.g. English, Chinese.")
    roles: list[Role] = Field(
        default_factory=list, description="Characters; a <video>.roles.yaml adds to them."
    )
    extra_info: str = Field(
        "", description="Extra information ({videoExtraInfo}); a <video>.extra.txt adds to it."
    )
    asr: bool = Field(True, description="Transcribe the soundtrack when a template uses {videoAsrText}.")
    asr_model: str = Field("qwen3-asr-flash", description="Speech-recognition model.")
    asr_chunk_seconds: float = Field(30.0, ge=5.0, le=180.0, description="Audio per recognition request.")
    concurrency: int = Field(4, ge=1, le=64, description="Requests of one job in flight at once.")
    cache: bool = Field(True, description="Reuse answers already paid for (same content, same params).")
    bailian: BailianOptions = Field(
        default_factory=BailianOptions, description="Options of mode: bailian (hosted video analysis)."
    )

    @property
    def effective_fps(self) -> float:
        return 1.0 / self.interval if self.interval else self.fps
