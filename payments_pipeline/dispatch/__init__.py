"""Dispatch engines: how a claimed event reaches processing.

- `inline` (`inline.InlineDispatcher`): processes the event in the caller.
- `queue` (`table.TableDispatcher`): nothing more; the claimed row is the job that
  `payments-pipeline worker` processes take from the table.
- `none` (`none.NullDispatcher`): nothing; intake alone, a sweep or worker picks the event up.

The database stays the source of truth: whatever an engine loses, the sweep finds again.
"""

from .base import Dispatcher
from .inline import InlineDispatcher
from .none import NullDispatcher
from .table import QueueDispatcher, TableDispatcher

__all__ = ["Dispatcher", "InlineDispatcher", "NullDispatcher", "QueueDispatcher", "TableDispatcher"]
