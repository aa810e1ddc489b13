"""The `--demo` setup: the built-in Braze simulator and a config for its workspaces.

Imported by the CLI only when `--demo` asks for it, so that the simulator stays out of the
runtime path.
"""

from __future__ import annotations

from exporter.config import Config, validate_config
from exporter.kpis import SUPPORTED_KPIS
from exporter.simulator import DEMO_WORKSPACES, BrazeSimulator

__all__ = ["BrazeSimulator", "demo_config", "demo_simulator"]


def demo_simulator() -> BrazeSimulator:
    return BrazeSimulator(DEMO_WORKSPACES)


def demo_config(simulator_url: str) -> tuple[Config, dict[str, str]]:
    """A config for the simulator's demo workspaces, every kind enabled, and the environment
    holding their keys."""
    environ = {f"BRAZE_DEMO_KEY_{i}": w.api_key for i, w in enumerate(DEMO_WORKSPACES)}
    data = {
        "poll": {"interval": "30s", "timeout": "5s", "kpis": list(SUPPORTED_KPIS)},
        "workspaces": [
            {
                "name": w.name,
                "url": simulator_url,
                "api_key_env": f"BRAZE_DEMO_KEY_{i}",
                "time_zone": w.time_zone,
                "apps": [{"name": a.name, "id": a.app_id} for a in w.apps],
            }
            for i, w in enumerate(DEMO_WORKSPACES)
        ],
    }
    return validate_config(data, "demo config", environ), environ
