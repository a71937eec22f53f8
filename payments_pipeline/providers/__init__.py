"""Provider layer: pure functions that verify, parse and interpret provider deliveries.

`stripe` and `monetbil` each expose the same shape: `verify_signature`, a parser for the body,
and `payment_update(event_type, payload)` mapping a stored event to a `PaymentUpdate` (or None for
types we record but do not act on). Nothing here touches a database, the network or Dagster, so
the receiver, the processing handlers, the benchmarks and the soak load generator share one
definition of what a valid delivery is. Every rejection is a `SignatureError` or `PayloadError`
(`providers.errors`), both `ValueError`s, whose messages never carry a secret, a signature or a
payload.
"""
