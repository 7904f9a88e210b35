"""Client-side tooling shared by the tests, the benchmarks and the demos: the open-loop load
generator, the sleepy test models and a Prometheus text scraper.

Not part of the operator (the `tritonop` package never imports it, and the wheel does not ship
it): it lives at the repository root like `devcluster`, importable from there (pytest's
`pythonpath`, the benches' sys.path, `python -m examples.demo_load` from the root). Standard
library only, so importing it pulls in no test dependency.
"""

from .generator import BODY, LoadGenerator, LoadStats
from .metrics import scrape_metrics
from .models import MODEL_REPO, SLEEPY_CODE, SLEEPY_CONFIG, slow_repository, write_model

__all__ = [
    "BODY",
    "MODEL_REPO",
    "SLEEPY_CODE",
    "SLEEPY_CONFIG",
    "LoadGenerator",
    "LoadStats",
    "scrape_metrics",
    "slow_repository",
    "write_model",
]
