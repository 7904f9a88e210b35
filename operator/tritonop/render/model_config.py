"""Pure: the model config Triton is asked to load (repository config + spec overrides + version).

Triton's load API takes a complete config (JSON of the ModelConfig protobuf) that replaces
config.pbtxt for that load, so the override is always the whole config.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from tritonop.api.spec import ModelConfigOverrides


class ModelConfigError(ValueError):
    """config.pbtxt (or a config Triton returned) cannot be parsed."""


def parse_pbtxt(text: str) -> model_config_pb2.ModelConfig:
    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as error:
        raise ModelConfigError(f"config.pbtxt does not parse: {error}") from error


def from_json(config: dict[str, Any]) -> model_config_pb2.ModelConfig:
    try:
        return json_format.ParseDict(config, model_config_pb2.ModelConfig(), ignore_unknown_fields=True)
    except json_format.ParseError as error:
        raise ModelConfigError(f"model config does not parse: {error}") from error


def effective_config(
    base: model_config_pb2.ModelConfig,
    model_name: str,
    overrides: ModelConfigOverrides | None,
    versions: list[int] | None,
) -> model_config_pb2.ModelConfig:
    """The config to load: base + overrides, serving exactly `versions` (None: the latest one)."""
    config = model_config_pb2.ModelConfig()
    config.CopyFrom(base)
    config.name = model_name
    config.version_policy.Clear()
    if versions:
        config.version_policy.specific.versions.extend(sorted(versions))
    else:
        config.version_policy.latest.num_versions = 1
    if overrides is not None:
        if overrides.max_batch_size is not None:
            config.max_batch_size = overrides.max_batch_size
        if overrides.dynamic_batching is not None:
            batching = overrides.dynamic_batching
            config.dynamic_batching.max_queue_delay_microseconds = batching.max_queue_delay_microseconds
            del config.dynamic_batching.preferred_batch_size[:]
            config.dynamic_batching.preferred_batch_size.extend(batching.preferred_batch_sizes)
        if overrides.instance_count is not None:
            if not config.instance_group:
                config.instance_group.add()
            for group in config.instance_group:
                group.count = overrides.instance_count
    return config


def override_problem(base: model_config_pb2.ModelConfig, overrides: ModelConfigOverrides | None) -> str | None:
    """What Triton would refuse in base + overrides that admission could not see (it does not know
    the repository's config.pbtxt), said in the spec's terms; None when there is nothing."""
    if overrides is None or overrides.dynamic_batching is None:
        return None
    max_batch = overrides.max_batch_size if overrides.max_batch_size is not None else base.max_batch_size
    source = (
        "spec.model.config.maxBatchSize" if overrides.max_batch_size is not None else "the repository's config.pbtxt"
    )
    too_large = [size for size in overrides.dynamic_batching.preferred_batch_sizes if size > max_batch]
    if not too_large:
        return None
    if max_batch == 0:
        return (
            "spec.model.config.dynamicBatching.preferredBatchSizes: the model does not batch (max_batch_size 0 "
            f"in {source}); remove the preferred sizes or set spec.model.config.maxBatchSize"
        )
    return (
        f"spec.model.config.dynamicBatching.preferredBatchSizes: {', '.join(map(str, too_large))} larger than "
        f"max_batch_size {max_batch} from {source}; use sizes up to {max_batch} or set spec.model.config.maxBatchSize"
    )


def to_json(config: model_config_pb2.ModelConfig) -> str:
    """The JSON Triton's load API takes (protobuf field names, as Triton prints them)."""
    return str(json_format.MessageToJson(config, preserving_proto_field_name=True, indent=None, sort_keys=True))


def served_versions(config: dict[str, Any]) -> list[int] | None:
    """The specific versions a loaded config serves, or None when its policy is not `specific`."""
    specific = config.get("version_policy", {}).get("specific")
    if not specific:
        return None
    return sorted(int(v) for v in specific.get("versions", []))
