"""Shared fixtures: a Braze simulator with two workspaces, and config data pointing at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from exporter.simulator import BrazeSimulator, SimApp, SimWorkspace

PROD_KEY = "prod-key-0123456789abcdef"
STAGE_KEY = "stage-key-fedcba9876543210"
PROD = SimWorkspace(
    "prod",
    PROD_KEY,
    apps=(SimApp("app-ios", "ios", 1_000_000), SimApp("app-web", "web", 300_000)),
)
STAGE = SimWorkspace("stage", STAGE_KEY, apps=(SimApp("app-stage", "ios", 5_000),))
KEY_ENV = {"PROD_KEY": PROD_KEY, "STAGE_KEY": STAGE_KEY}


@pytest.fixture
def sim() -> Iterator[BrazeSimulator]:
    with BrazeSimulator((PROD, STAGE)) as simulator:
        yield simulator


def config_data(url: str, **poll: object) -> dict[str, object]:
    """Config for both simulator workspaces (keys from KEY_ENV), with poll overrides."""
    return {
        "poll": {"interval": "1h", "timeout": "2s", **poll},
        "workspaces": [
            {
                "name": "prod",
                "url": url,
                "api_key_env": "PROD_KEY",
                "apps": [{"name": "ios", "id": "app-ios"}, {"name": "web", "id": "app-web"}],
            },
            {
                "name": "stage",
                "url": url,
                "api_key_env": "STAGE_KEY",
                "apps": [{"name": "ios", "id": "app-stage"}],
            },
        ],
    }
