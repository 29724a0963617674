"""Which KurrentDB the unit's image holds, and whether the charm supports it.

The charm cannot see the image tag (Juju hands it a registry digest), so it asks the binary
once per pod: `KurrentDB --version` prints the same version `/info` reports as `dbVersion`
and exits before KurrentDB checks any option. The answer is cached in stored state: a new
image always comes with a new pod (`juju refresh`, a new resource), whose stored state is
empty, so the cache can never outlive the image it describes; losing it costs one exec.
"""

from __future__ import annotations

import logging

import ops

import config
from workload import paths

logger = logging.getLogger(__name__)

VERSION_COMMAND = [paths.BINARY, "--version", "--disable-log-file"]


class Image:
    """The KurrentDB version of this unit's workload image."""

    def __init__(self, container: ops.Container, stored: ops.framework.BoundStoredState):
        self._container = container
        self._stored = stored
        self._stored.set_default(image_version="")
        self._asked = False
        self._unreadable = False  # asked this hook, and the binary told no version

    def version(self) -> str | None:
        """The image's KurrentDB version; None while it cannot be known (no Pebble yet)."""
        if self._stored.image_version:
            return str(self._stored.image_version)
        if self._asked or not self._container.can_connect():
            return None
        self._asked = True  # once per hook, even when it fails
        try:
            process = self._container.exec(
                VERSION_COMMAND, user=paths.WORKLOAD_USER, timeout=30, combine_stderr=True
            )
            output, _ = process.wait_output()
        except (ops.pebble.Error, OSError) as e:
            logger.warning("Cannot ask the image for its KurrentDB version: %s", e)
            self._unreadable = True
            return None
        version = config.version_from_cli(output or "")
        if version is None:
            logger.warning("KurrentDB --version printed no version")
            self._unreadable = True
            return None
        logger.info("The image holds KurrentDB %s", version)
        self._stored.image_version = version
        return version

    def problem(self) -> str | None:
        """A blocked-status message when the charm cannot run this image's KurrentDB."""
        return config.image_support(self.version())

    def unknown_to_charm(self) -> str | None:
        """Why this charm does not know the image's KurrentDB (None too while it cannot ask).

        A refresh checks it before the new image's KurrentDB starts (`check-workload-container`):
        an image that tells no version may not be KurrentDB at all, and a release line newer
        than the newest option list runs on that older list, which may name an option the new
        release dropped (an unknown option stops KurrentDB).
        """
        version = self.version()
        if version is None:
            if self._unreadable:
                return "the image's `KurrentDB --version` told no version: is it a KurrentDB image?"
            return None
        release, newest = config.parse_version(version), config.option_lists()[-1].first
        if release is not None and release[:2] > newest[:2]:
            return (
                f"KurrentDB {version} is newer than every release this charm knows (up to "
                f"{newest[0]}.{newest[1]}): refresh to a charm revision that knows it"
            )
        return None
