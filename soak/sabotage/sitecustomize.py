"""Plant a known bug in every process of a soak, to prove the soak catches it.

    SOAK_SABOTAGE=fence PYTHONPATH=soak/sabotage .venv/bin/python -m soak --duration 20 ...

Python imports `sitecustomize` at start-up from the path, and the soak passes `PYTHONPATH` and
`SOAK_SABOTAGE` on to every child (receiver, workers, sweeps), so the bug is live everywhere:

- `fence`: handlers commit their payment effect on a connection of their own, outside the
  processing transaction (no attempt fence, no rollback with a failed attempt). The soak must
  report `effects_once` violations (effects from an attempt that did not process the event).
- `dispatch`: a processing claim no longer needs a dispatch since the last attempt started, so a
  worker retries a failed event at once. The soak must report `attempt_without_dispatch`.

Never on a path outside such an experiment; docs/RELIABILITY.md shows both runs.
"""

from __future__ import annotations

import os

_MODE = os.environ.get("SOAK_SABOTAGE")

if _MODE == "fence":
    from payments_pipeline import handlers as _handlers

    _apply = _handlers.apply_payment_update

    def _outside_the_fence(ctx: _handlers.HandlerContext, update: object) -> bool:
        with ctx.conn.engine.begin() as own:
            detached = _handlers.HandlerContext(
                conn=own, event=ctx.event, attempt=ctx.attempt, now=ctx.now
            )
            return _apply(detached, update)  # type: ignore[arg-type]

    _handlers.apply_payment_update = _outside_the_fence  # type: ignore[assignment]
elif _MODE == "dispatch":
    from payments_pipeline import store as _store
    from payments_pipeline.store import events as _events

    # Patched where the processing claim looks it up (its module: `store` does not export it).
    _events._dispatched_since_last_attempt = lambda: _store.E.dispatched_at.is_not(None)
