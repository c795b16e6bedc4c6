"""Sending one job's model requests: the answer cache first, a bounded number in flight, none
after the first failure, and a batch that fails with the error that matters most.

An answer cut off before the model finished (`finish_reason` "length": the token budget; a
partial answer: the service's 180 s cap on a non-streaming call) is asked again, with twice the
budget (up to the model's output limit) or streamed, and only a complete answer is cached. One
that stays cut off is used as it is, with a warning in the job's history and outputs.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Literal, TypeVar

from dropflow.engine.annotate.ledger import Call, Ledger
from dropflow.engine.answer_cache import AnswerCache, request_key
from dropflow.engine.errors import DropflowError, ErrorKind, JobCancelled

if TYPE_CHECKING:
    from dropflow.engine.base import JobContext
    from dropflow.engine.providers.base import ModelLimits, VisionProvider, VisionRequest, VisionResult

T = TypeVar("T")
Kind = Literal["segment", "asr", "summary"]
REDO_TIMES = 3  # asks after a cut-off answer: doubling 4000 tokens three times passes every output cap


class NotSent(Exception):
    """A request held back because another request of the same job already failed."""


def worst(errors: Sequence[BaseException]) -> BaseException:
    """The error that decides the job: cancellation, then a bug, then a permanent failure, then a retryable one."""

    def rank(e: BaseException) -> int:
        if isinstance(e, asyncio.CancelledError | JobCancelled):
            return 0
        if isinstance(e, NotSent):
            return 4
        if not isinstance(e, DropflowError):
            return 1
        return 3 if e.kind == ErrorKind.RETRYABLE else 2

    return min(errors, key=rank)


async def gather_all(aws: Sequence[Awaitable[T]]) -> list[T]:
    """Await all; when some fail, let the others finish (their answers are paid and cached), then raise."""
    results = await asyncio.gather(*aws, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise worst(errors)
    return results  # type: ignore[return-value]


class Caller:
    """One job's way to the model: every answer it gets is entered in its `ledger`."""

    def __init__(
        self,
        provider: VisionProvider,
        cache: AnswerCache | None,
        ctx: JobContext,
        ledger: Ledger,
        marker: str,
        concurrency: int,
        limits: Callable[[str], ModelLimits],
        warnings: list[str],
    ) -> None:
        self.provider = provider
        self.cache = cache
        self.ctx = ctx
        self.ledger = ledger
        self.marker = marker  # the payer an answer is cached under: this job, this content
        self.limit = asyncio.Semaphore(concurrency)
        self.failed: BaseException | None = None  # the first failed request: send no more after it
        self.limits = limits  # of a model, through this provider
        self.warnings = warnings  # the job's, shown in its outputs

    async def ask(self, kind: Kind, request: VisionRequest, label: str = "") -> Call:
        """One answer: from the cache when this exact request was answered before, else paid for and
        cached (complete answers only; see the module docstring). `label` names the request in a
        warning ("segment 3 (01:20-02:40)").

        Raises:
            JobCancelled: the job was cancelled before the request went out.
            NotSent: another request of this job failed first.
            RetryableError, AuthError, PermanentError: the provider's, as `generate` raises them.
        """
        cache = self.cache
        key = request_key(self.provider.name, request) if cache is not None else ""
        if cache is not None:
            hit = cache.get(key)  # one small local file: read inline (see the sidecars in Run.run)
            if hit is not None:
                call = Call(kind, hit.result, cached=True, paid_here=hit.paid_by == self.marker)
                self.ledger.calls.append(call)
                return call
        async with self.limit:
            self.ctx.check_cancelled()
            if self.failed is not None:
                # a 401 or a 429 will not be different for the next request: stop paying and hammering;
                # what was answered is cached, the retry sends only what is missing
                raise NotSent()
            try:
                sent, result = await self._complete(kind, request)
            except Exception as exc:
                self.failed = self.failed or exc
                raise
        if not result.complete:
            # kept out of the cache: a rerun asks again instead of inheriting a cut-off answer
            why = (
                "the service cut it off"
                if result.partial
                else f"it hit its budget of {sent.max_tokens} tokens"
            )
            message = f"the {label or kind} answer is incomplete ({why}); it is used as it is"
            self.warnings.append(message)
            await self.ctx.warn(message)
        elif cache is not None:
            try:
                await asyncio.to_thread(cache.put, key, result, paid_by=self.marker)
            except OSError as exc:  # the answer is paid for: use it even if it cannot be kept
                self.ctx.log.warning("cannot store an answer in the cache: %s", exc)
        call = Call(kind, result, cached=False, paid_here=True)
        self.ledger.calls.append(call)
        return call

    async def _complete(self, kind: Kind, request: VisionRequest) -> tuple[VisionRequest, VisionResult]:
        """The answer (and the request that got it), asked again (bigger budget, or streamed) while
        it comes back cut off and there is a way to get more. Each answer set aside is entered in
        the ledger: it was paid for."""
        result = await self.provider.generate(request)
        for _ in range(REDO_TIMES):
            again = self._again(request, result)
            if again is None:
                break
            self.ledger.calls.append(Call(kind, result, cached=False, paid_here=True, used=False))
            self.ctx.check_cancelled()
            request = again
            result = await self.provider.generate(request)
        return request, result

    def _again(self, request: VisionRequest, result: VisionResult) -> VisionRequest | None:
        """The request that can get a complete answer where `result` was cut off, or None."""
        if result.complete:
            return None
        if result.partial:  # only non-streaming calls are cut at 180 s
            return None if request.stream else dataclasses.replace(request, stream=True)
        most = self.limits(request.model).max_output_tokens
        if most is None or request.max_tokens >= most:
            return None
        return dataclasses.replace(request, max_tokens=min(most, request.max_tokens * 2))
