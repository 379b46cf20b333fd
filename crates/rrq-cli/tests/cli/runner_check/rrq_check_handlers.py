"""The `rrq runner check` handlers for the Python runner of rrq 0.11.1.

Start it as `rrq-runner --settings rrq_check_handlers.settings` (with this
directory on PYTHONPATH); `rrq runner check` appends `--tcp-socket`.
"""

import asyncio

from rrq.exc import RetryJob
from rrq.registry import Registry
from rrq.runner_settings import PythonRunnerSettings


async def echo(request):
    ctx = request.context
    return {
        "params": request.params,
        "job_id": ctx.job_id,
        "attempt": ctx.attempt,
        "trace_context": ctx.trace_context,
    }


async def sleep(request):
    await asyncio.sleep(float(request.params.get("seconds", 0)))
    return "slept"


async def fail(request):
    raise RuntimeError(request.params["message"])


async def retry(request):
    raise RetryJob("retry requested", defer_seconds=float(request.params["delay"]))


registry = Registry()
registry.register("rrq_check.echo", echo)
registry.register("rrq_check.sleep", sleep)
registry.register("rrq_check.fail", fail)
registry.register("rrq_check.retry", retry)

settings = PythonRunnerSettings(registry=registry)
