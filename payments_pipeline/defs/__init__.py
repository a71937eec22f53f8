"""The Dagster code location: thin doors onto the core (`payments_pipeline.sweep`).

One small module per Dagster concept; `payments_pipeline.definitions` assembles them. Nothing
outside this package (and `definitions.py`) imports Dagster: the CLI reaches it through
`defs.launch`, imported lazily.
"""
