"""The rules of Bailian's hosted video analysis (QuanMiao light app, API version 2024-08-01), in
one table: what dropflow checks before it uploads or pays, and what the loopback fake enforces.

Sources (read 2025; "unconfirmed" marks a value no page at hand states, chosen to be safe):
- [submit]  https://help.aliyun.com/zh/model-studio/user-guide/api-quanmiaolightapp-2024-08-01-submitvideoanalysistask
            and https://api.aliyun.com/document/QuanMiaoLightApp/2024-08-01/SubmitVideoAnalysisTask
- [get]     https://help.aliyun.com/zh/model-studio/api-quanmiaolightapp-2024-08-01-getvideoanalysistask
- [run]     https://help.aliyun.com/zh/model-studio/user-guide/api-quanmiaolightapp-2024-08-01-runvideoanalysis
- [update]  https://help.aliyun.com/zh/model-studio/api-quanmiaolightapp-2024-08-01-updatevideoanalysistask
- [sdk]     alibabacloud_quanmiaolightapp20240801 2.14 (models: field names and nesting)
- [oss]     https://help.aliyun.com/zh/oss/user-guide/upload-objects (PutObject: 5 GB per request),
            V4 signed URLs: 7 days at most
- [brief]   dropflow issue 14 (frameSampleMethod interval 1-5 s, pixel 300-768)
"""

from __future__ import annotations

from typing import Final

# --- the request ---------------------------------------------------------------------------------

# [brief][sdk] frameSampleMethod: {methodName, interval (s between frames), pixel (longest side)}
FRAME_INTERVAL_RANGE: Final = (1.0, 5.0)
FRAME_PIXEL_RANGE: Final = (300, 768)
FRAME_METHOD: Final = "standard"  # unconfirmed: the only methodName sent; the service's default method
# [submit] videoModelCustomPromptTemplate "must contain the {videoAsrText} variable"
VIDEO_TEMPLATE_VARIABLE: Final = "{videoAsrText}"
# [submit] the summary (text) stage's template reads the shot analyses through this variable
# (unconfirmed that the service refuses a template without it: dropflow requires it, as two-stage does)
SUMMARY_TEMPLATE_VARIABLE: Final = "{videoAnalysisText}"
# [run][sdk] generateOptions: which results to make; each has its output field [get]
GENERATE_OPTIONS: Final = {
    "videoAnalysis": "videoAnalysisResult",  # per-shot analysis (the vision stage)
    "videoGenerate": "videoGenerateResult",  # the text model's answer to the summary template
    "videoTitleGenerate": "videoTitleGenerateResult",
    "videoMindMappingGenerate": "videoMindMappingGenerateResult",
}
# unconfirmed: the language values; dropflow's English/Chinese names are mapped onto them
LANGUAGES: Final = {"chinese": "chinese", "english": "english", "中文": "chinese", "英文": "english"}
VIDEO_MODELS: Final = (
    "qwen-vl-max-latest",
    "qwen-vl-max",
    "qwen-vl-plus-latest",
    "qwen-vl-plus",
)  # [submit][run]

# --- the video -------------------------------------------------------------------------------------

MAX_VIDEO_BYTES: Final = 1024**3  # unconfirmed: the service's own cap is not stated; dropflow's 1 GB applies
MAX_VIDEO_SECONDS: Final = 2 * 3600  # unconfirmed: 2 h, refused before upload
URL_SCHEMES: Final = ("http://", "https://")  # [submit] videoUrl: a URL the service fetches

# --- the task ----------------------------------------------------------------------------------------

# [get] data.taskStatus; the service spells success SUCCESSED
STATUSES: Final = ("PENDING", "RUNNING", "SUCCESSED", "FAILED", "CANCELED")
REFUSED_CONTENT: Final = "ViolationOfSecurityPolicy"  # [get] data.header.errorCode; business data empty
TASK_RESULT_DAYS: Final = 7  # unconfirmed: how long GetVideoAnalysisTask keeps a finished task's result

# [update] UpdateVideoAnalysisTask (PUT, form body taskId + taskStatus) "only supports cancelling":
# CANCELED is the one status it takes, and its reply's data.taskStatus says CANCELED when it worked.
CANCEL_STATUS: Final = "CANCELED"
# unconfirmed: which statuses it still cancels (no page says). dropflow takes, and the fake
# enforces, PENDING only: a task that started has begun to use tokens, so it may bill anyway.
# Also unconfirmed, though billing is by the tokens used: a task cancelled while PENDING bills nothing.
CANCELLABLE_STATUSES: Final = ("PENDING",)
# [update] the reply for a task id the service does not know: 200, success false, this code
UNKNOWN_TASK: Final = "DataNotExists"
# unconfirmed: the code refusing to cancel a task that started or ended (dropflow reads any
# refusal the same way, so only the fake spells it)
CANCEL_REFUSED: Final = "TaskStatusNotCancelable"

# --- what it costs (CNY, Beijing, list prices; unconfirmed: check the console before large runs) ----

# The light app bills its two stages the way the models it calls are billed: the vision stage by
# the tokens of the frames it sends (qwen-vl-max: 3 CNY per million input tokens, 9 per million
# output), the text stage by tokens (qwen-max: 2.4 / 9.6), and speech recognition of the
# soundtrack by the minute of audio (unconfirmed: about 0.0035 CNY per second, paraformer class).
PRICES_PER_MILLION_TOKENS: Final = {  # model -> (input, output)
    "qwen-vl-max-latest": (3.0, 9.0),
    "qwen-vl-max": (3.0, 9.0),
    "qwen-vl-plus-latest": (1.5, 4.5),
    "qwen-vl-plus": (1.5, 4.5),
    "qwen-max": (2.4, 9.6),
    "qwen-max-latest": (2.4, 9.6),
    "qwen-plus": (0.8, 2.0),
    "qwen-plus-latest": (0.8, 2.0),
}
ASR_PRICE_PER_MINUTE: Final = 0.21  # unconfirmed


def frames_billed(duration: float, interval: float) -> int:
    """The frames the service samples from a video of `duration` s at one every `interval` s."""
    return max(1, int(duration // interval) + (1 if duration % interval else 0))


def frame_tokens(width: int, height: int, pixel: int) -> int:
    """Tokens of one frame scaled to `pixel` on its longest side: one per 28x28 patch, +2 (the
    Qwen-VL rule DashScope bills frames by)."""
    if width <= 0 or height <= 0:
        return 0
    scale = min(1.0, pixel / max(width, height))
    w, h = max(28, round(width * scale / 28) * 28), max(28, round(height * scale / 28) * 28)
    return (w // 28) * (h // 28) + 2
