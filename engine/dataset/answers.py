"""The checks an answer passes before it goes into a record: not empty, not a refusal, valid JSON
when asked for, no literal media token. Pure; the engine retries a rejected answer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal

from dropflow.engine.dataset.records import escape_placeholders, has_placeholder

# Refusals and "no image" (or "no video") answers seen from vision models, English and Chinese.
# Matched only near the start of an answer, where models put them, so a description quoting such
# words is kept.
_REFUSALS = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\b(i )?(can ?not|can't|cannot|am unable to|'m unable to|am not able to|'m not able to|do not|don't)"
        r" (see|view|access|open|process|analy[sz]e|display|load) (the |any |this |an |your )?"
        r"(image|picture|photo|attachment|video|clip|frames?)",
        r"\bno (image|picture|photo|video|clip|frame)s? (was|were|is|are|has been|have been) (provided|attached|uploaded|shared|included)",
        r"\b(image|picture|photo|video|clip) (is|was|seems to be|appears to be) (missing|not (visible|available|attached|loaded))",
        r"\bunable to (see|view|access|load|display|play) (the |any |this )?(image|picture|photo|video|clip)",
        r"\bas an ai( language model)?,? i (can ?not|can't|don't|do not)",
        r"\bi'?m sorry,? (but )?i (can ?not|can't|am unable to) (help|assist|describe|identify|comply)",
        r"\bi (can ?not|can't|won't) (help|assist) with (that|this)",
        r"(无法|不能)(查看|看到|识别|打开|加载)(该|这张|这个|此)?(图片|图像|照片|视频)",
        r"(没有|未)(看到|收到|提供)(任何)?(图片|图像|照片|视频)",
        r"抱歉[，,]?\s*我(无法|不能)",
    )
]
_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\n?```$", re.DOTALL)


@dataclass(frozen=True)
class Rejection:
    code: str  # empty | refusal | invalid_json | media_token
    detail: str


def check_answer(
    text: str, *, json_mode: bool = False, image_token: Literal["escape", "reject"] = "escape"
) -> tuple[str, Rejection | None]:
    """The answer as it goes into a record, or why it may not.

    Empty answers, refusals ("I can't see the image") and, in JSON mode, anything but a JSON object
    or array are rejected; a literal `<image>` (or `<video>`, `<audio>`, a Qwen-VL special token:
    `records.PLACEHOLDERS`) is escaped to `[image]` or rejected, as `image_token` says. JSON answers are stored compact and fence-free.
    """
    answer = text.strip()
    if not answer:
        return "", Rejection("empty", "the model returned an empty answer")
    head = answer[:300]
    if any(p.search(head) for p in _REFUSALS):
        return answer, Rejection("refusal", f"the model refused or did not see the image: {head[:160]!r}")
    if json_mode:
        fenced = _FENCE.match(answer)
        body = fenced.group(1).strip() if fenced else answer
        try:
            parsed = json.loads(body)
        except ValueError as exc:
            return answer, Rejection("invalid_json", f"the answer is not valid JSON ({exc}): {head[:120]!r}")
        if not isinstance(parsed, dict | list):
            return answer, Rejection("invalid_json", f"the answer is JSON but not an object: {head[:120]!r}")
        answer = json.dumps(parsed, ensure_ascii=False)
    if has_placeholder(answer):
        if image_token == "reject":
            return answer, Rejection(
                "media_token",
                "the answer holds a literal media or chat-template token (<image>, <video>, <audio>, "
                "or a Qwen-VL special token such as <|image_pad|>)",
            )
        answer = escape_placeholders(answer)
    return answer, None
