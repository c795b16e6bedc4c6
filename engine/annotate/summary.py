"""Two-stage mode's summary pass, kept within the summary model's input limit.

The summary model reads every segment's analysis at once. A long video's analyses can outgrow
what it takes (qwen-max: 30,720 tokens), and the service refuses that request only after every
segment was paid for. So the text is measured first, with the provider's own tokenizer, and when
it does not fit, consecutive segments are summarised in groups (each group with its stretch of
the transcript), then the group summaries together, level by level, until one request holds them
all. `check_room`, run before any segment is sent, makes sure the fixed part of the summary
prompt (template, roles, extra information) leaves room for the analyses at all.

A video whose analyses fit is summarised exactly as before: one request, the same text.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dropflow.engine.annotate.asr import clock
from dropflow.engine.annotate.calls import gather_all
from dropflow.engine.annotate.templates import fill, uses
from dropflow.engine.errors import ConfigError, PermanentError
from dropflow.engine.providers.base import TextPart, VisionRequest

if TYPE_CHECKING:
    from dropflow.engine.annotate.asr import Transcript
    from dropflow.engine.annotate.ledger import Call

MARGIN = 0.97  # the service's count can differ a little from the SDK's tokenizer
RESERVE = 256  # the chat template's own tokens (role markers, a default system prompt)
PIECE_OVERHEAD = 12  # each piece's "[mm:ss-mm:ss]" line and the blank line after it
MAX_LEVELS = 6


@dataclass(frozen=True)
class Piece:
    """One text the summary joins: a segment's analysis, or a group's summary."""

    start: float
    end: float
    text: str
    tokens: int


@dataclass
class Part:
    """A group summary made on the way (level 1 summarises segments, level 2 groups, ...)."""

    level: int
    start: float
    end: float
    call: Call


@dataclass
class Group:
    """Consecutive pieces summarised in one request, with their stretch of the transcript or not."""

    pieces: list[Piece]
    with_asr: bool = True


@dataclass
class Summary:
    final: Call
    parts: list[Part] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the user should know (left in warnings)


Ask = Callable[[VisionRequest, str], Awaitable["Call"]]


def budget(max_input_tokens: int) -> int:
    return int(max_input_tokens * MARGIN) - RESERVE


class Summariser:
    """The summary of one job. `count` (blocking) and `max_input` are None when the provider does
    not say how it counts: then there is one request, as large as it comes."""

    def __init__(
        self,
        *,
        model: str,
        template: str,
        values: dict[str, str],
        transcript: Transcript | None,
        suffix: str,
        temperature: float,
        max_tokens: int,
        count: Callable[[str], int] | None,
        max_input: int | None,
        ask: Ask,
    ) -> None:
        self.model, self.template, self.values = model, template, values
        self.transcript, self.suffix = transcript, suffix
        self.temperature, self.max_tokens = temperature, max_tokens
        self.count = count if max_input else None
        self.budget = budget(max_input) if max_input else 0
        self.ask = ask

    # --- the prompt ---

    def prompt(self, pieces: list[Piece], *, asr: str, part: tuple[int, int] | None = None) -> str:
        """The summary prompt over `pieces`; `part` = (index, count) when it is one of several groups."""
        analysis = "\n\n".join(f"[{clock(p.start)}-{clock(p.end)}]\n{p.text.strip()}" for p in pieces)
        text = fill(self.template, {**self.values, "videoAnalysisText": analysis, "videoAsrText": asr})
        if self.values["videoRoles"] and not uses(self.template, "videoRoles"):
            text = f"{self.values['videoRoles']}\n\n{text}"
        if part is not None:
            start, end = pieces[0].start, pieces[-1].end
            text += (
                f"\n\nThis is part {part[0] + 1} of {part[1]} of the video, from {clock(start)} to "
                f"{clock(end)}: summarise this part only; the parts are joined afterwards."
            )
        return text + self.suffix

    def request(self, text: str) -> VisionRequest:
        return VisionRequest(
            model=self.model, parts=[TextPart(text)], temperature=self.temperature, max_tokens=self.max_tokens
        )

    def asr(self, start: float | None = None, end: float | None = None) -> str:
        return self.transcript.render(start, end) if self.transcript else ""

    # --- measuring (blocking: runs in a thread) ---

    def fixed_tokens(self) -> int:
        """Tokens of the prompt without analysis and transcript (with the longest part note)."""
        assert self.count is not None
        return self.count(self.prompt([Piece(0.0, 0.0, "", 0)], asr="", part=(99, 99)))

    def check_room(self, answer_tokens: int) -> None:
        """Raise ConfigError when the fixed part and one segment's answer cannot fit together."""
        if self.count is None:
            return
        fixed = self.fixed_tokens()
        if fixed + answer_tokens + PIECE_OVERHEAD > self.budget:
            raise ConfigError(
                f"the summary prompt takes {fixed} tokens before any analysis: with one answer of "
                f"{answer_tokens} tokens it is over what {self.model} reads ({self.budget} of its input)",
                hint="shorten extra_info, the roles or the summary template, lower max_tokens, or set "
                "summary_model to one that reads more (qwen-plus)",
            )

    def plan(self, pieces: list[Piece], level: int) -> tuple[list[Group] | None, bool, list[str]]:
        """(groups, with_transcript, notes): None groups when all pieces fit in one request (with the
        whole transcript, or at a level above the first without it)."""
        assert self.count is not None
        fixed, notes = self.fixed_tokens(), list[str]()
        cache: dict[tuple[float | None, float | None], int] = {}

        def asr_tokens(start: float | None, end: float | None) -> int:
            if (start, end) not in cache:
                cache[start, end] = self.count(self.asr(start, end)) if self.count else 0
            return cache[start, end]

        def size(group: list[Piece], with_asr: bool, whole: bool = False) -> int:
            tokens = fixed + sum(p.tokens + PIECE_OVERHEAD for p in group)
            if with_asr:
                tokens += asr_tokens(None, None) if whole else asr_tokens(group[0].start, group[-1].end)
            return tokens

        if size(pieces, True, whole=True) <= self.budget:
            return None, True, notes
        if level > 0 and size(pieces, False, whole=True) <= self.budget:
            notes.append("the transcript was too long for the final summary: the part summaries carry it")
            return None, False, notes
        groups: list[Group] = []
        for piece in pieces:
            if groups and groups[-1].with_asr and size([*groups[-1].pieces, piece], True) <= self.budget:
                groups[-1].pieces.append(piece)
                continue
            with_asr = True
            if size([piece], True) > self.budget:
                asr = asr_tokens(piece.start, piece.end)
                if fixed + asr + PIECE_OVERHEAD + 64 > self.budget:  # its stretch of speech alone is too long
                    with_asr, asr = False, 0
                    notes.append(
                        f"the transcript of {clock(piece.start)}-{clock(piece.end)} was too long for "
                        "the summary model; that part was summarised without it"
                    )
                if fixed + asr + piece.tokens + PIECE_OVERHEAD > self.budget:
                    piece = self._shrink(piece, fixed, asr, notes)
            groups.append(Group([piece], with_asr))
        return groups, True, notes

    def _shrink(self, piece: Piece, fixed: int, asr: int, notes: list[str]) -> Piece:
        """A piece cut to what one request holds beside its transcript (rare: one huge analysis)."""
        assert self.count is not None
        room = max(64, self.budget - fixed - asr - PIECE_OVERHEAD)
        text = piece.text
        while self.count(text) > room:
            text = text[: int(len(text) * 0.9)]
        notes.append(
            f"the analysis of {clock(piece.start)}-{clock(piece.end)} was longer than the summary "
            "model reads and was cut"
        )
        return Piece(piece.start, piece.end, text, self.count(text))

    async def _part(self, group: Group, index: int, count: int, level: int) -> Call:
        first, last = group.pieces[0], group.pieces[-1]
        asr = self.asr(first.start, last.end) if group.with_asr else ""
        text = self.prompt(group.pieces, asr=asr, part=(index, count))
        return await self.ask(self.request(text), f"summary part {index + 1}/{count} (level {level + 1})")

    def _count_all(self, texts: list[str]) -> list[int]:
        assert self.count is not None
        return [self.count(t) for t in texts]

    # --- running ---

    async def run(self, pieces: list[Piece]) -> Summary:
        """The summary of `pieces`, in as many requests as it takes.

        Raises what `Caller.ask` raises; PermanentError when the pieces do not shrink.
        """
        if self.count is None:
            final = await self.ask(self.request(self.prompt(pieces, asr=self.asr())), "summary")
            return Summary(final)
        tokens = await asyncio.to_thread(self._count_all, [p.text for p in pieces])
        pieces = [Piece(p.start, p.end, p.text, n) for p, n in zip(pieces, tokens, strict=True)]
        parts: list[Part] = []
        notes: list[str] = []
        for level in range(MAX_LEVELS + 1):
            groups, with_asr, found = await asyncio.to_thread(self.plan, pieces, level)
            notes += found
            if groups is None:
                text = self.prompt(pieces, asr=self.asr() if with_asr else "")
                return Summary(await self.ask(self.request(text), "summary"), parts, notes)
            if len(groups) >= len(pieces) and level > 0:
                break
            calls = await gather_all([self._part(g, i, len(groups), level) for i, g in enumerate(groups)])
            spans = [(g.pieces[0].start, g.pieces[-1].end) for g in groups]
            parts += [Part(level + 1, a, b, c) for (a, b), c in zip(spans, calls, strict=True)]
            texts = [c.result.text for c in calls]
            tokens = await asyncio.to_thread(self._count_all, texts)
            pieces = [Piece(a, b, t, n) for (a, b), t, n in zip(spans, texts, tokens, strict=True)]
        raise PermanentError(
            f"the segment analyses do not shrink into one request of {self.model}",
            hint="lower max_tokens (shorter answers) or set summary_model to one that reads more (qwen-plus)",
            provider="",
            code="SummaryTooLong",
        )
