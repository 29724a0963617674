"""Where this hook's configuration comes from: the charm's options, or the last good ones.

Parsed once per hook, and read the same way by the reconcile and the status path, so the
same options always give the same status. A bad value never stops the workload: the node
keeps running on the last configuration the leader found valid (peer app databag), and the
status names the option, the value and what is allowed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import credentials
from config import CharmConfig, ConfigError, parse_config

if TYPE_CHECKING:
    import ops

    from image import Image
    from state import CharmState

logger = logging.getLogger(__name__)


class ConfigSource:
    """The charm's options as this hook uses them."""

    def __init__(self, charm: ops.CharmBase, state: CharmState, image: Image):
        self._charm = charm
        self._state = state
        self._image = image
        self._parsed: tuple[CharmConfig | None, ConfigError | None] | None = None
        self._chosen: tuple[dict[str, str] | None, ConfigError | None] | None = None

    def parsed(self) -> tuple[CharmConfig | None, ConfigError | None]:
        """The current options, or why they cannot be used (parsed once per hook)."""
        if self._parsed is None:
            try:
                # Option names and types depend on the KurrentDB version the image holds.
                options = dict(self._charm.config)
                self._parsed = (parse_config(options, self._image.version()), None)
            except ConfigError as e:
                self._parsed = (None, e)
        return self._parsed

    def effective(self) -> CharmConfig | None:
        """The config to run with: the current one, or the last good one while it is bad."""
        config, error = self.parsed()
        if config is not None:
            if self._charm.unit.is_leader():
                self._state.save_last_good_config(config.to_stored())
            return config
        assert error is not None
        last_good = self._state.last_good_config()
        if last_good is None:
            return None
        try:
            return CharmConfig.from_stored(last_good, self._image.version())
        except ConfigError as stale:
            logger.warning("Not using the last good configuration: %s", stale.message)
            return None

    def chosen_passwords(self) -> tuple[dict[str, str] | None, ConfigError | None]:
        """The leader's view of the `system-users` secret (read once per hook).

        Read from the raw option, so that a bad value of another option does not stop the
        leader from creating or rotating credentials.
        """
        if self._chosen is None:
            if not self._charm.unit.is_leader():
                self._chosen = (None, None)
            else:
                secret_id = self._charm.config.get("system-users") or None
                try:
                    chosen = credentials.read_system_users(
                        self._charm.model, str(secret_id) if secret_id else None
                    )
                    self._chosen = (chosen, None)
                except ConfigError as e:
                    self._chosen = (None, e)
        return self._chosen

    def errors(self) -> list[ConfigError]:
        """What is wrong with the options, for the status path."""
        found = (self.parsed()[1], self.chosen_passwords()[1])
        return [error for error in found if error is not None]
