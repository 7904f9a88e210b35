"""Reading a model's lifecycle from a tritonserver log (tests/integration/helpers.lifecycle), on
lines from real Triton 2.51 logs at the default log level."""

from __future__ import annotations

from collections import Counter

from tests.integration.helpers import Lifecycle, lifecycle

# A canary pod of the dev cluster switched 1 -> 2 by a side-by-side load ([1, 2]) and a retire
# ([2]) on a fresh repository: 1 reloaded beside 2, then 2 reloaded: three instances created.
SIDE_BY_SIDE_THEN_RETIRE = """\
I1204 21:42:04.666228 12115 model_lifecycle.cc:472] "loading: canary:1"
I1204 21:42:04.666281 12115 model_lifecycle.cc:472] "loading: canary:2"
I1204 21:42:05.911618 12115 python_be.cc:2249] "TRITONBACKEND_ModelInstanceInitialize: canary_0_0 (CPU device 0)"
I1204 21:42:05.929511 12115 python_be.cc:2249] "TRITONBACKEND_ModelInstanceInitialize: canary_0_0 (CPU device 0)"
I1204 21:42:06.037806 12115 model_lifecycle.cc:839] "successfully loaded 'canary'"
I1204 21:42:06.040240 12115 model_lifecycle.cc:472] "loading: canary:2"
I1204 21:42:07.269007 12115 model_lifecycle.cc:624] "successfully unloaded 'canary' version 1"
I1204 21:42:07.283365 12115 python_be.cc:2249] "TRITONBACKEND_ModelInstanceInitialize: canary_0_0 (CPU device 0)"
I1204 21:42:07.389268 12115 model_lifecycle.cc:839] "successfully loaded 'canary'"
I1204 21:42:08.657038 12115 model_lifecycle.cc:624] "successfully unloaded 'canary' version 1"
I1204 21:42:08.673039 12115 model_lifecycle.cc:624] "successfully unloaded 'canary' version 2"
"""
# tritonserver on a fresh copy of model_repo serving sleepy 2, switched to 3 by one load request.
ONE_LOAD = """\
I1204 21:47:03.386709 21330 model_lifecycle.cc:472] "loading: sleepy:3"
I1204 21:47:04.623454 21330 python_be.cc:2249] "TRITONBACKEND_ModelInstanceInitialize: sleepy_0_0 (CPU device 0)"
I1204 21:47:04.716223 21330 model_lifecycle.cc:839] "successfully loaded 'sleepy'"
I1204 21:47:05.944993 21330 model_lifecycle.cc:624] "successfully unloaded 'sleepy' version 2"
"""


def test_three_loads_of_a_side_by_side_switch() -> None:
    assert lifecycle(SIDE_BY_SIDE_THEN_RETIRE, "canary") == Lifecycle(Counter({1: 1, 2: 2}), 3, Counter({1: 2, 2: 1}))


def test_one_load_per_switch() -> None:
    assert lifecycle(ONE_LOAD, "sleepy") == Lifecycle(Counter({3: 1}), 1, Counter({2: 1}))
    assert lifecycle(ONE_LOAD, "sleep") == Lifecycle(Counter(), 0, Counter())  # another model's lines
