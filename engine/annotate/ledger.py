"""The ledger of spend: every model answer a job used, and what of it this job paid for."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dropflow.engine.providers.base import Usage, VisionResult


@dataclass
class Call:
    """One model answer this job used."""

    kind: Literal["segment", "asr", "summary"]
    result: VisionResult
    cached: bool  # came from the answer cache
    paid_here: bool  # paid by this job (in this attempt or an earlier one)
    used: bool = True  # False: a cut-off answer that was asked again (paid, not used)


@dataclass
class Ledger:
    """The answers of one job, in the order they came."""

    calls: list[Call] = field(default_factory=list)

    def usage(self) -> dict[str, int]:
        total = Usage()
        for c in self.calls:
            if c.paid_here:
                total.add(c.result.usage)
        out = total.as_dict()
        out["requests"] = sum(c.paid_here for c in self.calls)
        out["cached_answers"] = sum(c.cached for c in self.calls)
        out["reused_from_other_jobs"] = sum(c.cached and not c.paid_here for c in self.calls)
        return out
