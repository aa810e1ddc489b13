"""A stand-in for Braze's KPI and sessions data series endpoints, on a loopback HTTP server.

Faithful to Braze's reference: a bearer key per workspace and its permissions, parameter
validation, days and hours cut in the workspace's time zone, the current day or hour served
partial, MAU one day behind, one rate-limit bucket per workspace reset on the clock hour.
Complete values are deterministic (`BrazeSimulator.expected_value`), and faults (errors,
odd bodies, delays, dropped connections) can be injected. Used by the tests and by
`--demo`; runs alone with `python -m exporter.simulator --listen 127.0.0.1:8080`.

Modules: `kinds` (the six series kinds), `periods` (days and hours in a time zone),
`values` (the value model), `endpoints` (Braze's own answer), `faults`, `server`
(`BrazeSimulator`), `httpd` (the HTTP plumbing), `demo` and `cli`.
"""

from exporter.simulator.cli import main
from exporter.simulator.demo import DEMO_WORKSPACES
from exporter.simulator.faults import ANY, Fault
from exporter.simulator.kinds import ALL_PERMISSIONS, KINDS
from exporter.simulator.periods import TIME_FORMATS
from exporter.simulator.server import BrazeSimulator, RecordedRequest
from exporter.simulator.workspaces import SimApp, SimWorkspace

__all__ = [
    "ALL_PERMISSIONS",
    "ANY",
    "DEMO_WORKSPACES",
    "KINDS",
    "TIME_FORMATS",
    "BrazeSimulator",
    "Fault",
    "RecordedRequest",
    "SimApp",
    "SimWorkspace",
    "main",
]
