"""KurrentDB's process as Pebble runs it: the config file watcher, SIGHUP, the service log.

Follows the server's source (kurrent-io/KurrentDB v26.1.0):
- the YAML file is an `IConfiguration` source with `reloadOnChange: true`
  (`src/KurrentDB.Core/Configuration/KurrentConfiguration.cs`, `AddKurrentYamlConfigFile`):
  .NET's file watcher re-reads it ~250 ms (its debounce) after it changes;
- SIGHUP or `/admin/reloadconfig` publishes `ReloadConfig`; the handler re-binds the options
  from that `IConfiguration` (`ClusterVNodeOptionsExtensions.Reload`), never from the file
  itself (`src/KurrentDB.Core/ClusterVNode.cs`, `Handle(ClientMessage.ReloadConfig)`);
- `ReloadLogOptions` applies `LogLevel` unless it is `Default`, and only when it differs
  logs "The log level was adjusted to: <level>" (through Serilog for levels up to
  Information, also on stdout above it, so the line is always in the service's output);
- a (re)start reads the file as it is.

Time is a clock the test owns, so "before the watcher fired" is exact.
"""

from __future__ import annotations

from collections.abc import Callable

import yaml

WATCH_DEBOUNCE = 0.25  # seconds: FileConfigurationSource.ReloadDelay's default


def _log_level(config_text: str | None) -> str | None:
    try:
        options = yaml.safe_load(config_text or "") or {}
    except yaml.YAMLError:
        return None
    return options.get("LogLevel") if isinstance(options, dict) else None


class KurrentDBProcess:
    """One node's process: what its configuration holds and what level it logs at."""

    def __init__(self, clock: Callable[[], float]):
        self._clock = clock
        self.file: str | None = None  # the config file as on disk
        self._file_changed_at = 0.0
        self._loaded: str | None = None  # the file as IConfiguration last read it
        self.log_level: str | None = None  # what the running process logs at
        self.log: list[str] = []
        self.sighups = 0

    def file_written(self, content: str) -> None:
        """The charm pushed a new config file."""
        if content != self.file:
            self.file, self._file_changed_at = content, self._clock()

    def _configuration(self) -> str | None:
        if self.file != self._loaded and self._clock() - self._file_changed_at >= WATCH_DEBOUNCE:
            self._loaded = self.file  # the watcher fired
        return self._loaded

    def started(self) -> None:
        """A (re)start: options come straight from the file."""
        self._loaded = self.file
        self.log_level = _log_level(self.file)
        self.log.append("[ 1, 1,INF] KurrentDB started")

    def sighup(self) -> None:
        """`ReloadConfig`: re-bind what the configuration holds, then apply the log level."""
        self.sighups += 1
        level = _log_level(self._configuration())
        if level and level != "Default" and level != self.log_level:
            self.log_level = level
            self.log.append(f"[ 1,14,INF] The log level was adjusted to: {level}")
        self.log.append("[ 1,14,INF] The node's configuration was successfully reloaded")
