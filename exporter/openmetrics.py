"""OpenMetrics text with sample timestamps, written as it is produced (for the backfill).

Families must not interleave, so a family's series are written one after the other, each as
its samples in time order; `promtool tsdb create-blocks-from openmetrics` reads this.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TextIO

Samples = Iterable[tuple[int, float]]  # (Unix time in seconds, value)


def write_family(
    out: TextIO,
    name: str,
    help_text: str,
    series: Iterable[tuple[Mapping[str, str], Samples]],
) -> int:
    """One gauge family: its metadata, then every series' samples; the number of samples."""
    out.write(f"# TYPE {name} gauge\n# HELP {name} {_escape_help(help_text)}\n")
    written = 0
    for labels, samples in series:
        prefix = name + _labels(labels) + " "
        for timestamp, value in samples:
            out.write(f"{prefix}{_number(value)} {timestamp}\n")
            written += 1
    return written


def write_end(out: TextIO) -> None:
    out.write("# EOF\n")


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{key}="{_escape_label(value)}"' for key, value in labels.items() if value)
    return "{" + inner + "}"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(value)
