"""The HTTP door (`payments-pipeline serve`): everything the receiver needs that is about HTTP.

`http.app.create_app` assembles these pieces into a Starlette app. Nothing here
runs SQL or decides who processes an event: deliveries are read and verified with `providers`,
recorded and claimed by `gate.receive`, and handed to a `Dispatcher` after the response went out.
"""
