"""The repository's test models (model_repo/) and repositories derived from them, for the load
that tests, benchmarks and demos send."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_REPO = REPO_ROOT / "model_repo"
SLEEPY_CONFIG = MODEL_REPO / "sleepy" / "config.pbtxt"
SLEEPY_CODE = MODEL_REPO / "sleepy" / "1" / "model.py"


def slow_repository(root: Path, model: str, batch_ms: int, load_delay_s: float = 0.0) -> Path:
    """A repository with one model: sleepy's code, one request per batch, `batch_ms` per batch,
    so one replica serves 1000 / batch_ms requests/s (autoscaling tests and benchmarks); loading
    it takes `load_delay_s` (a large model's start)."""
    config = SLEEPY_CONFIG.read_text()
    config = config.replace("max_batch_size: 8", "max_batch_size: 1").replace(
        'string_value: "20"', f'string_value: "{batch_ms}"'
    )
    if load_delay_s:
        config += f'parameters {{\n  key: "load_delay_s"\n  value: {{ string_value: "{load_delay_s:g}" }}\n}}\n'
    return write_model(root, model, config, {1: SLEEPY_CODE.read_text()})


def write_model(root: Path, model: str, config: str, code: dict[int, str]) -> Path:
    """Write one model into the repository at `root`: its config.pbtxt and each version's
    model.py (`code` maps version -> source). Returns `root`, readable by the servers."""
    folder = root / model
    folder.mkdir(parents=True)
    (folder / "config.pbtxt").write_text(config)
    for version, source in code.items():
        (folder / str(version)).mkdir()
        (folder / str(version) / "model.py").write_text(source)
    root.chmod(0o755)
    return root
