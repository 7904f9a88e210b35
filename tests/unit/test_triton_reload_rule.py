"""The fake Triton (tests/unit/fakes.py) loads what Triton 2.51 loads, request by request.

Each row is a sequence measured with the nvidia-pytriton wheel's tritonserver 2.51 (a copy of
model_repo/sleepy, --model-control-mode=explicit --log-verbose=2, requests flowing meanwhile):
per load request, the versions its log shows created ("CreateModel() 'sleepy' version N": a
load) and those updated without a load ("UpdateModelConfig() 'sleepy' version N"). Note that
"loading: sleepy:N" (model_lifecycle.cc:472) is logged for both. A python-backend model's stub
writes __pycache__ into a version's folder the first time it loads it, after Triton read the
folder's timestamps: with a fresh repository (`writes_bytecode`) the next request that lists
that version reloads it; once every folder holds bytecode it is updated in place.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest

from tests.unit.fakes import CUDA_OOM, FakeTriton, base_config
from tritonop.render.model_config import effective_config, to_json
from tritonop.triton import TritonError


def config(*versions: int, **changes: Any) -> str:
    loaded = json.loads(to_json(effective_config(base_config(), "m", None, list(versions))))
    return json.dumps({**loaded, **changes})


COUNT_2 = [{"count": 2, "kind": "KIND_CPU"}]
# fmt: off
SEQUENCES = [
    pytest.param(True, [config(2), config(2, 3), config(3)], [([2], []), ([2, 3], []), ([3], [])],
                 id="today's switch, fresh repository: the old version reloaded, the new one loaded twice"),
    pytest.param(False, [config(2), config(2, 3), config(3)], [([2], []), ([3], [2]), ([], [3])],
                 id="today's switch, bytecode already in every folder: one load"),
    pytest.param(True, [config(2), config(3), config(2)], [([2], []), ([3], []), ([2], [])],
                 id="one load per switch, fresh repository: the new version once, the old never"),
    pytest.param(True, [config(2), None], [([2], []), ([3], [])],
                 id="the repository's config (latest) without an override"),
    pytest.param(True, [config(2), config(3, instance_group=COUNT_2)], [([2], []), ([3], [])],
                 id="one load with another instance count"),
    pytest.param(False, [config(2), config(2, instance_group=COUNT_2), config(2, max_batch_size=4)],
                 [([2], []), ([], [2]), ([2], [])],
                 id="same version: an instance count in place, another max_batch_size reloaded"),
]
# fmt: on


@pytest.mark.parametrize(("writes_bytecode", "requests", "expected"), SEQUENCES)
def test_what_each_load_request_loads(
    writes_bytecode: bool, requests: list[str | None], expected: list[tuple[list[int], list[int]]]
) -> None:
    triton = FakeTriton(repository=(1, 2, 3), capacity=3, writes_bytecode=writes_bytecode)
    seen = []
    for request in requests:
        loads, in_place = len(triton.loads), len(triton.in_place)
        asyncio.run(triton.load("m", request))
        seen.append((triton.loads[loads:], triton.in_place[in_place:]))
    assert seen == expected


def test_a_failed_load_changes_nothing() -> None:
    triton = FakeTriton(broken={3: "ImportError: corrupt weights file"}).serve(2)
    with pytest.raises(TritonError, match="corrupt weights file"):
        asyncio.run(triton.load("m", config(3)))
    assert triton.ready == {2} and triton.loads == []


def test_device_memory_holds_every_copy_that_serves_and_every_copy_being_loaded() -> None:
    # Serving 2 from a fresh repository: listing 2 again reloads it, so 2 + 2 + 3 are in memory at once.
    beside = FakeTriton(capacity=2, writes_bytecode=True).serve(2)
    with pytest.raises(TritonError, match=re.escape(CUDA_OOM)):
        asyncio.run(beside.load("m", config(2, 3)))
    assert beside.ready == {2}
    # Loading 3 alone: 2 serves until 3 is READY, two copies.
    alone = FakeTriton(capacity=2, writes_bytecode=True).serve(2)
    asyncio.run(alone.load("m", config(3)))
    assert alone.ready == {3} and alone.loads == [3]
    with pytest.raises(TritonError, match=re.escape(CUDA_OOM)):
        asyncio.run(FakeTriton(capacity=1).serve(2).load("m", config(3)))
