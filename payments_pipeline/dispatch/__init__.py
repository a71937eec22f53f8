"""Dispatch engines: how a claimed event reaches processing (`PAYMENTS_DISPATCH`).

- `inline` (`inline.InlineDispatcher`): processes the event in the caller.
- `table` (`table.TableDispatcher`): nothing more; the claimed row is the job that
  `payments-pipeline worker` processes take from the table.
- `celery` (`celery.CeleryDispatcher`): publishes a task to RabbitMQ; Celery workers process it.
- `none` (`none.NullDispatcher`): nothing; intake alone, a sweep or worker picks the event up.

The database stays the source of truth: whatever an engine loses, the sweep finds again.
Importing this package never imports Celery: only the `celery` engine needs it, once chosen.
"""

from sqlalchemy import Engine

from ..config import Settings
from ..models import DispatchMode
from .base import BatchDispatcher, Dispatcher, Unsent, dispatch_many, unsent_errors
from .inline import InlineDispatcher
from .none import NullDispatcher
from .table import TableDispatcher

__all__ = [
    "BatchDispatcher",
    "Dispatcher",
    "InlineDispatcher",
    "NullDispatcher",
    "TableDispatcher",
    "Unsent",
    "build_dispatcher",
    "dispatch_many",
    "unsent_errors",
]


def build_dispatcher(mode: DispatchMode, engine: Engine, settings: Settings) -> Dispatcher:
    """The engine `mode` names, for a door that claimed events (sweep, replay, receiver)."""
    match DispatchMode(mode):
        case DispatchMode.INLINE:
            return InlineDispatcher(engine, settings)
        case DispatchMode.TABLE:
            return TableDispatcher()
        case DispatchMode.CELERY:
            from .celery import CeleryDispatcher

            return CeleryDispatcher(settings)
        case DispatchMode.NONE:
            return NullDispatcher()
    raise ValueError(f"no dispatch engine {mode!r} in this build")
