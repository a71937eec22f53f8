"""No secret, signature or payload in any log line of the receiver, the workers or the sweeps.

Three kinds of evidence are looked for, in every line of every captured stdout and stderr:
- the run's secrets, verbatim;
- signatures: any `v1=<64 hex>` or `sign=<32 hex>` (whatever its value), and any 32- or 64-hex
  token that is one of the signatures the load generator actually sent;
- payloads: the marker planted in every payload (a customer e-mail in Stripe metadata and in a
  Monetbil field), which appears nowhere but in the bodies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Set
from dataclasses import dataclass, field
from pathlib import Path

_SIGNATURE_SHAPES = re.compile(r"v1=[0-9a-f]{64}|sign(?:=|%3D|\": ?\")[0-9a-f]{32}", re.I)
_HEX_TOKEN = re.compile(r"(?<![0-9a-fA-F])(?:[0-9a-f]{64}|[0-9a-f]{32})(?![0-9a-fA-F])")


@dataclass
class LogScan:
    files: int = 0
    lines: int = 0
    leaks: list[str] = field(default_factory=list)


def scan(
    paths: Iterable[Path],
    *,
    secrets: Iterable[str],
    marker: str,
    signatures: Set[str],
    limit: int = 20,
) -> LogScan:
    """Every leak found, as `file:line: what` (the value itself is never repeated)."""
    result = LogScan()
    needles = [(s, "a secret") for s in secrets if s] + [(marker, "a payload (marker)")]
    for path in paths:
        if not path.is_file():
            continue
        result.files += 1
        with path.open(encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, 1):
                result.lines += 1
                found = [what for needle, what in needles if needle in line]
                if _SIGNATURE_SHAPES.search(line):
                    found.append("a signature (v1=/sign= value)")
                if any(token in signatures for token in _HEX_TOKEN.findall(line)):
                    found.append("a signature that was sent")
                if found and len(result.leaks) < limit:
                    result.leaks.append(f"{path.name}:{number}: {', '.join(found)}")
                elif found:
                    result.leaks.append("...")
                    return result
    return result
