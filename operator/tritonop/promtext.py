"""The few samples the operator reads from a Triton /metrics page, without parsing the rest.

The autoscaler scrapes every ready pod every second. prometheus_client's parser builds every
family of the page (CPU, memory, every summary's quantiles): about 2.7 ms for Triton 2.51's 93
lines with one model, most of an idle operator's CPU once pods run. Here a line is looked at
only when it starts with a wanted name, and only its labels are parsed (same results: a unit
test compares the two on a real page).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator

# name="value" pairs; values may hold escaped quotes and backslashes (exposition format).
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value
    return re.sub(r"\\[\\\"n]", lambda m: _ESCAPES[m.group(0)], value)


def _number(text: str) -> float:
    lowered = text.lower()
    if lowered == "nan":
        return math.nan
    if lowered in ("+inf", "inf"):
        return math.inf
    if lowered == "-inf":
        return -math.inf
    return float(text)


def samples(text: str, names: Iterable[str]) -> Iterator[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of each sample whose name is one of `names` (a counter's `_total`
    suffix is taken off, as for prometheus_client's counters). Comments and other series are
    skipped unparsed; a malformed wanted line raises ValueError."""
    wanted = frozenset(names)
    prefixes = tuple(wanted)
    for line in text.splitlines():
        if not line.startswith(prefixes):
            continue
        brace = line.find("{")
        if brace >= 0:
            name = line[:brace]
            close = line.rfind("}")
            if close < brace:
                raise ValueError(f"malformed metrics line: {line!r}")
            labels = {key: _unescape(value) for key, value in _LABEL.findall(line[brace + 1 : close])}
            rest = line[close + 1 :].split()
        else:
            name, *rest = line.split()
            labels = {}
        name = name.strip().removesuffix("_total")
        if name not in wanted:  # a longer name with a wanted prefix (…_summary_us_count)
            continue
        if not rest:
            raise ValueError(f"malformed metrics line: {line!r}")
        yield name, labels, _number(rest[0])
