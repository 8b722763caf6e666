"""Loading a LazyConfig with command-line overrides, refusing unknown keys with a clear message."""
import difflib
import inspect

from libai.config import LazyConfig
from libai.config.lazy import locate
from omegaconf import DictConfig, OmegaConf

_MISSING = object()


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message says what to change."""


def _known_keys(node, prefix=""):
    keys = []
    if isinstance(node, DictConfig):
        for k in node.keys():
            keys.append(prefix + str(k))
            keys += _known_keys(node[k] if not OmegaConf.is_missing(node, k) else None, prefix + str(k) + ".")
    return keys


def check_override(cfg, override):
    if "=" not in override:
        raise ConfigError(f"override {override!r} is not of the form key=value")
    key = override.split("=", 1)[0].lstrip("+")
    if OmegaConf.select(cfg, key, default=_MISSING) is not _MISSING:
        return
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key, default=None) if parent_key else cfg
    # a LazyCall accepts any argument of the callable it calls, set in the file or not
    if isinstance(parent, DictConfig) and "_target_" in parent:
        target = parent._target_
        params = inspect.signature(locate(target) if isinstance(target, str) else target).parameters
        if leaf in params or any(p.kind == p.VAR_KEYWORD for p in params.values()):
            return
    close = difflib.get_close_matches(key, _known_keys(cfg), n=3)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise ConfigError(f"unknown config key {key!r} in override {override!r}{hint}")


def load_config(path, overrides=()):
    try:
        cfg = LazyConfig.load(path)
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r} does not exist") from None
    for override in overrides:
        check_override(cfg, override)
    return LazyConfig.apply_overrides(cfg, list(overrides))
