"""Juju topology: the labels that tie every metric, log line and alert to this deployment."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topology:
    """Where this unit sits in Juju."""

    model: str
    model_uuid: str
    application: str
    unit: str
    charm_name: str

    def scrape_metadata(self) -> dict[str, str]:
        """The `scrape_metadata` / `metadata` form the COS relations use."""
        return {
            "model": self.model,
            "model_uuid": self.model_uuid,
            "application": self.application,
            "unit": self.unit,
            "charm_name": self.charm_name,
        }

    def labels(self) -> dict[str, str]:
        """Label names and values as COS puts them on metrics and logs."""
        return {
            "juju_model": self.model,
            "juju_model_uuid": self.model_uuid,
            "juju_application": self.application,
            "juju_unit": self.unit,
            "juju_charm": self.charm_name,
        }

    def cosl(self):  # -> cosl.JujuTopology
        """The same topology as cosl's type (loaded only when rules are (re)built)."""
        from cosl import JujuTopology

        return JujuTopology(
            model=self.model,
            model_uuid=self.model_uuid,
            application=self.application,
            unit=self.unit,
            charm_name=self.charm_name,
        )
