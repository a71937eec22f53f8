"""The reliability soak (issue 6): the whole product under load and faults, then an audit.

`python -m soak --backend postgres --duration 600` starts the HTTP receiver (`serve --dispatch
queue`), worker processes whose handlers fail at random, sweeps through the real Dagster job
(several at once at times), a load generator of signed Stripe and Monetbil deliveries with
duplicates and out-of-order pairs, and chaos (SIGKILLed workers, cut database connections). After
`--duration` it stops the faults, lets everything settle, and checks that nothing was lost, nothing
was applied twice and every redispatch was audited. See docs/RELIABILITY.md.

Modules: `config` (the knobs), `database` (per-run database, audit trigger, connection cuts),
`processes` (children and the worker supervisor), `worker` (the failure-injecting worker entry
point), `stories` (payment stories and signed deliveries), `load` (the load generator), `chaos`,
`sweeps` (Dagster sweeps through the CLI), `verify` (the invariants), `report`, `orchestrator`.

`--dispatch celery` runs the same soak on the Celery engine: `broker` (the run's private queue),
`celery_app` (the Celery app module the workers load: the product's app, the failing handlers),
`celery_supervisor` (Celery workers, pool-process and whole-worker kills), `celery_runs` (the
task runs, read back from the workers' logs for the audit).
"""
