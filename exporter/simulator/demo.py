"""The demo workspaces served by `--demo` and by `python -m exporter.simulator`."""

from __future__ import annotations

from exporter.simulator.workspaces import SimApp, SimWorkspace

DEMO_WORKSPACES: tuple[SimWorkspace, ...] = (
    SimWorkspace(
        name="production",
        api_key="demo-production-key",
        apps=(
            SimApp("11111111-1111-4111-8111-111111111111", "ios", 1_200_000),
            SimApp("22222222-2222-4222-8222-222222222222", "android", 950_000),
            SimApp("33333333-3333-4333-8333-333333333333", "web", 400_000),
        ),
        time_zone="America/New_York",
    ),
    SimWorkspace(
        name="staging",
        api_key="demo-staging-key",
        apps=(SimApp("44444444-4444-4444-8444-444444444444", "ios", 3_000),),
        time_zone="Europe/Berlin",
    ),
)
