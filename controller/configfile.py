"""The --config file: YAML read safely, bounded, with duplicate keys refused, into overrides.

Apart from the CLI so that `--help` and every run without a file do not import a YAML parser.
"""

from __future__ import annotations

import yaml

from controller.policy import Rules
from controller.resources import ResourceEntry
from controller.settings import (
    ConfigError,
    RepositoryOverride,
    parse_config,
    parse_config_resources,
)


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that rejects a key repeated in one mapping instead of keeping the last.

    Merge keys (`<<: *defaults`) work as in yaml.safe_load: the mapping's own keys override
    merged ones, and only its own keys must be unique."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[object, object]:
    seen: set[object] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node)
        try:
            repeated = key in seen
        except TypeError:  # a mapping or a list used as a key
            raise yaml.constructor.ConstructorError(
                None, None, f"a {type(key).__name__} cannot be a key", key_node.start_mark
            ) from None
        if repeated:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)

MAX_CONFIG_BYTES = 4 * 1024 * 1024
"""A --config file larger than this is refused (it is read whole; /dev/zero never ends)."""


def load_config(
    path: str, *, field: str, defaults: Rules
) -> tuple[tuple[RepositoryOverride, ...], tuple[ResourceEntry, ...]]:
    """The overrides and the protect-resources entries of the file at `path`; `field` is where
    the path came from, for errors."""
    if not path:
        raise ConfigError(field, "expected the path of a YAML file, got ''")
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise ConfigError(field, f"cannot read {path!r}: {error.strerror or error}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(field, f"{path!r} is larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(field, f"cannot read {path!r}: not UTF-8 text ({error.reason})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as error:
        raise ConfigError(f"--config {path}", _yaml_reason(error)) from None
    overrides = parse_config(data, defaults=defaults, source=path)
    return overrides, parse_config_resources(data, source=path)


def _yaml_reason(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError):
        problem = error.problem or error.context or "malformed"
        mark = error.problem_mark or error.context_mark
        if mark is not None:
            return f"invalid YAML: {problem} at line {mark.line + 1}, column {mark.column + 1}"
        return f"invalid YAML: {problem}"
    return f"invalid YAML: {error}"
