"""What one `tritonop cache stage` run found and did: one line of JSON, printed and written to
the Job's termination message, which the operator parses. Kept free of heavy imports (the
operator imports it; the stager writes it) and under Kubernetes' 4 KiB termination-message limit."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

Result = Literal["hit", "staged", "no-room", "failed"]
RESULTS: tuple[str, ...] = ("hit", "staged", "no-room", "failed")
MAX_BYTES = 4000  # a termination message is cut at 4096 bytes; leave a margin


@dataclass(frozen=True)
class Verdict:
    result: Result
    reason: str | None  # a CamelCase reason (NoManifest, BudgetTooSmall, ...); None for hit and staged
    message: str
    key: str | None = None  # the cache entry (versions/<key>); None when failed before the manifest was read
    bytes: int = 0  # the version's size
    seconds: float = 0.0  # time spent copying (0 on a hit)
    budgetBytes: int = 0  # the JSON's spelling, as the operator's status uses it
    usedBytes: int = 0  # entries' bytes after the run; scratch copies are not counted
    evicted: list[str] = field(default_factory=list)
    storeChanged: bool = False  # s3: an object's ETag differs from the staged one's
    restagedBecause: str | None = None  # a cached file changed after staging, so it was copied again

    @property
    def ok(self) -> bool:
        """The pods can load verified bytes (hit, staged, or no-room with a scratch copy)."""
        return self.result != "failed"

    def to_json(self) -> str:
        """One line; the message and the evicted list are shortened if the whole would pass MAX_BYTES."""
        verdict = self
        text = json.dumps(asdict(verdict), separators=(",", ":"))
        while len(text.encode()) > MAX_BYTES:
            if len(verdict.evicted) > 1:
                verdict = replace(verdict, evicted=verdict.evicted[: len(verdict.evicted) // 2])
            elif len(verdict.message) > 200:
                verdict = replace(verdict, message=verdict.message[: len(verdict.message) // 2] + "…")
            else:
                verdict = replace(verdict, evicted=[])
                text = json.dumps(asdict(verdict), separators=(",", ":"))
                break
            text = json.dumps(asdict(verdict), separators=(",", ":"))
        return text

    @classmethod
    def from_json(cls, text: str) -> Verdict:
        """Parse a termination message; ValueError when it is not a verdict (e.g. a crash's last log line)."""
        try:
            data: Any = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"not a cache verdict: {error}") from error
        if not isinstance(data, dict) or data.get("result") not in RESULTS:
            raise ValueError(f"not a cache verdict: {text[:200]!r}")
        try:
            return cls(
                result=data["result"],
                reason=data.get("reason"),
                message=str(data.get("message", "")),
                key=data.get("key"),
                bytes=int(data.get("bytes", 0)),
                seconds=float(data.get("seconds", 0.0)),
                budgetBytes=int(data.get("budgetBytes", 0)),
                usedBytes=int(data.get("usedBytes", 0)),
                evicted=[str(key) for key in data.get("evicted", [])],
                storeChanged=bool(data.get("storeChanged", False)),
                restagedBecause=data.get("restagedBecause"),
            )
        except (TypeError, ValueError) as error:
            raise ValueError(f"not a cache verdict: {error}") from error
