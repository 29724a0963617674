"""KurrentDB's process as Pebble runs it: the config file watcher, SIGHUP, the service log.

Follows the server's source (kurrent-io/KurrentDB v26.1.0):
- the YAML file is an `IConfiguration` source with `reloadOnChange: true`
  (`src/KurrentDB.Core/Configuration/KurrentConfiguration.cs`, `AddKurrentYamlConfigFile`,
  with the default, non-polling file provider): on a change .NET's
  `FileConfigurationProvider` sleeps `ReloadDelay` (250 ms), then reads the file as it is
  then; a change during that sleep fires the next watch token, so another sleep and read
  follow (`ChangeToken.OnChange` takes the next token before it runs the reload);
- SIGHUP (`src/KurrentDB.Core/ClusterVNode.cs`, `PosixSignalRegistration`) or POST
  `/admin/reloadconfig` (`src/KurrentDB.Core/Services/Transport/Http/Controllers/
  AdminController.cs`) publishes `ReloadConfig`; the handler re-binds the options from that
  `IConfiguration` (`src/KurrentDB.Core/Configuration/ClusterVNodeOptionsExtensions.cs`,
  `Reload`), never from the file itself (`ClusterVNode.cs`,
  `Handle(ClientMessage.ReloadConfig)`), and applies only the log level, the certificates
  and the transform from them;
- `ReloadLogOptions` (same file) applies `LogLevel` unless it is `Default`, and only when it
  differs from the level in force logs "The log level was adjusted to: <level>": through
  Serilog, which the new level filters, so for levels above Information it also writes the
  line to stdout; either way the line is in the service's output exactly once (the
  reload's own Information lines, "Reloading the node's configuration since ..." and
  "... successfully reloaded", are filtered out above Information);
- a (re)start reads the file as it is. The logger starts at logconfig.json's
  `Logging:LogLevel:Default` (`src/KurrentDB/logconfig.json`: Debug;
  `src/KurrentDB.Logging/KurrentLoggerConfiguration.cs`), then the ClusterVNode constructor
  runs `ReloadLogOptions` with the options read at start, so a start at another level logs
  the adjusted line too.

Time is a clock the test owns, so "before the watcher fired" is exact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import yaml

from workload import paths

WATCH_DEBOUNCE = 0.25  # seconds: FileConfigurationSource.ReloadDelay's default
# KurrentDB's LogLevel values in Serilog's order; "Default" means "leave the logger alone".
LEVELS = ("Verbose", "Debug", "Information", "Warning", "Error", "Fatal")
LOGCONFIG_DEFAULT_LEVEL = "Debug"  # src/KurrentDB/logconfig.json, Logging:LogLevel:Default
PEBBLE_LOGS_DEFAULT_LINES = 30  # `pebble logs` without -n


def config_options(config_text: str | None) -> dict[str, Any] | None:
    """A config file's options; None when it is not a YAML mapping (KurrentDB would exit)."""
    try:
        options = yaml.safe_load(config_text or "")
    except yaml.YAMLError:
        return None
    if options is None:
        return {}
    return options if isinstance(options, dict) else None


def _log_level(config_text: str | None) -> str | None:
    level = (config_options(config_text) or {}).get("LogLevel")
    return level if isinstance(level, str) else None


class PebbleLogs:
    """What the exec of `pebble logs` hands back to the charm."""

    def __init__(self, lines: Sequence[str]):
        self._text = "\n".join(lines)

    def wait_output(self) -> tuple[str, str]:
        """Stdout and stderr, as `ExecProcess.wait_output` returns them."""
        return self._text, ""


class KurrentDBProcess:
    """One node's process: what its configuration holds and what level it logs at."""

    def __init__(self, clock: Callable[[], float], *, watch_delay: float = WATCH_DEBOUNCE):
        """``watch_delay``: how long after a change the file watcher re-reads the file."""
        self._clock = clock
        self.watch_delay = watch_delay
        self.file: str | None = None  # the config file as on disk
        self._loaded: str | None = None  # the file as IConfiguration last read it
        self._reread_at: float | None = None  # when the watcher reads the file next
        self._changed_during_sleep = False  # so it reads it once more, watch_delay later
        self.log_level: str | None = None  # what the running process logs at
        self.log: list[str] = []  # the service's output, kept by Pebble across restarts
        self.sighups = 0

    def file_written(self, content: str) -> None:
        """The charm pushed a new config file."""
        if content == self.file:
            return
        self._watch()  # re-reads due before this write still see the old content
        self.file = content
        if self._reread_at is None:
            self._reread_at = self._clock() + self.watch_delay
        else:
            self._changed_during_sleep = True

    def _watch(self) -> None:
        """The watcher's re-reads due by now, each of the file as it was at that moment."""
        while self._reread_at is not None and self._reread_at <= self._clock():
            self._loaded = self.file
            if self._changed_during_sleep:
                self._reread_at += self.watch_delay
                self._changed_during_sleep = False
            else:
                self._reread_at = None

    def _configuration(self) -> str | None:
        self._watch()
        return self._loaded

    def started(self) -> None:
        """A (re)start: options come straight from the file; a new process, a new watcher."""
        self._loaded, self._reread_at, self._changed_during_sleep = self.file, None, False
        self.log_level = LOGCONFIG_DEFAULT_LEVEL
        self._information("KurrentDB started")
        self._reload_log_options(_log_level(self.file))

    def sighup(self) -> None:
        """SIGHUP: the process publishes `ReloadConfig`."""
        self.sighups += 1
        self.reload("SIGHUP has been received")

    def reload(self, cause: str = "a request has been received on /admin/reloadconfig") -> None:
        """`ReloadConfig`: re-bind what the configuration holds, then apply the log level."""
        self._information(f"Reloading the node's configuration since {cause}.")
        self._reload_log_options(_log_level(self._configuration()))
        self._information("The node's configuration was successfully reloaded")

    def pebble_logs(self, command: Sequence[str]) -> PebbleLogs | None:
        """The output of `pebble logs <service> [-n N]`; None for any other command."""
        if list(command[:2]) != [paths.PEBBLE_BINARY, "logs"]:
            return None
        args = list(command[2:])
        lines = PEBBLE_LOGS_DEFAULT_LINES
        if "-n" in args and args.index("-n") + 1 < len(args):
            lines = int(args[args.index("-n") + 1])
        return PebbleLogs(self.log if lines < 0 else self.log[-lines:] if lines else [])

    def _reload_log_options(self, level: str | None) -> None:
        """`ClusterVNode.ReloadLogOptions`: the level takes effect, then the line is logged."""
        if level not in LEVELS or level == self.log_level:
            return  # "Default" (or no LogLevel) leaves the logger as it is
        self.log_level = level
        line = f"The log level was adjusted to: {level}"
        if LEVELS.index(level) > LEVELS.index("Information"):
            self.log.append(line)  # Console.WriteLine: Serilog now filters the line out
        else:
            self._information(line)

    def _information(self, text: str) -> None:
        """A Serilog Information line, kept only if the level in force lets it through."""
        level = self.log_level or LOGCONFIG_DEFAULT_LEVEL
        if LEVELS.index(level) <= LEVELS.index("Information"):
            self.log.append(f"[ 1,14,INF] {text}")
