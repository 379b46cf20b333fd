"""A minimal runner in plain Python (standard library only) that follows the
runner protocol except for the one rule named by `--break RULE`:

* `cancel`: ignores cancel frames;
* `cancel_message`: answers a cancelled request with another message than
  `Job cancelled`;
* `deadline`: ignores `context.deadline`;
* `timeout_type`: answers timeouts without `error.type`;
* `late_deadline`: runs the handler before looking at a deadline that has
  already passed (and reports the handler's failure);
* `not_found`: answers unknown handlers without `error.type`;
* `probe`: exits when a connection closes without sending anything;
* `none`: breaks nothing.

With `--late SECONDS` it takes up each request only that long after reading
it, as a runner starved of CPU would: a cancel arriving meanwhile finds no
running request and is ignored, as the protocol says.

`rrq runner check` must fail exactly the check covering the broken rule.

With `--record PATH` it first writes what it was started with (argv, a few
environment variables, working directory, stdin, process group) to PATH as
JSON, and prints a line to stdout and one to stderr.
"""

import argparse
import asyncio
import datetime
import json
import os
import signal
import struct
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--break", dest="broken", default="none")
parser.add_argument("--record")
parser.add_argument("--late", type=float, default=0.0)
parser.add_argument("--tcp-socket", required=True)
args = parser.parse_args()
# request_id -> the future a cancel frame resolves; a cancel that arrives
# before the request's task has first run is thus not lost.
running = {}
# The loop keeps only weak references to tasks.
tasks = set()
if args.record:
    with open(args.record, "w") as f:
        json.dump({
            "argv": sys.argv[1:],
            "env": {k: os.environ.get(k) for k in ("RRQ_RUNNER_TCP_SOCKET", "RRQ_REDIS_DSN", "CHECK_EXTRA")},
            "cwd": os.getcwd(),
            "stdin": os.readlink("/proc/self/fd/0"),
            "leads_its_group": os.getpgid(0) == os.getpid(),
        }, f)
    print("broken runner: hello on stdout", flush=True)
    print("broken runner: hello on stderr", file=sys.stderr, flush=True)


def outcome(req, status, result=None, message=None, kind=None, after=None):
    error = None if message is None else {"message": message, "type": kind, "code": None, "details": None}
    return {"job_id": req["job_id"], "request_id": req["request_id"], "status": status,
            "result": result, "error": error, "retry_after_seconds": after}


async def handle(req, stop):
    ctx, params, name = req["context"], req.get("params") or {}, req["function_name"]
    if req.get("protocol_version", "2") != "2":
        return outcome(req, "error", message="Unsupported protocol version")
    deadline = None
    if ctx.get("deadline") and args.broken != "deadline":
        deadline = datetime.datetime.fromisoformat(ctx["deadline"].replace("Z", "+00:00"))
        left = (deadline - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
        if left <= 0 and args.broken != "late_deadline":
            return outcome(req, "timeout", message="Job deadline exceeded", kind=timeout_kind())
    if name == "rrq_check.echo":
        body = {"params": params, "job_id": ctx["job_id"], "attempt": ctx["attempt"],
                "trace_context": ctx.get("trace_context")}
        work = asyncio.sleep(0, body)
    elif name == "rrq_check.sleep":
        work = asyncio.sleep(float(params.get("seconds", 0)), "slept")
    elif name == "rrq_check.fail":
        return outcome(req, "error", message=params["message"])
    elif name == "rrq_check.retry":
        return outcome(req, "retry", message="retry requested", after=float(params["delay"]))
    else:
        kind = None if args.broken == "not_found" else "handler_not_found"
        return outcome(req, "error", message=f"No handler registered for function '{name}'", kind=kind)
    timeout = None if deadline is None else (deadline - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    work = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({work, stop}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    if work in done:
        return outcome(req, "success", result=work.result())
    work.cancel()
    if stop in done:
        message = "cancelled" if args.broken == "cancel_message" else "Job cancelled"
        return outcome(req, "error", message=message, kind="cancelled")
    return outcome(req, "timeout", message="Job execution timed out", kind=timeout_kind())


def timeout_kind():
    return None if args.broken == "timeout_type" else "timeout"


async def serve(reader, writer):
    lock = asyncio.Lock()

    async def run(req, stop):
        reply = await handle(req, stop)
        running.pop(req["request_id"], None)
        data = json.dumps({"type": "response", "payload": reply}).encode()
        async with lock:
            writer.write(struct.pack(">I", len(data)) + data)
            await writer.drain()

    def start(coro):
        task = asyncio.ensure_future(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def take_up(req):
        stop = asyncio.get_running_loop().create_future()
        running[req["request_id"]] = stop
        start(run(req, stop))

    async def take_up_late(req):
        await asyncio.sleep(args.late)
        take_up(req)

    try:
        while True:
            try:
                header = await reader.readexactly(4)
            except asyncio.IncompleteReadError as e:
                if args.broken == "probe" and not e.partial:
                    os._exit(9)
                raise
            (length,) = struct.unpack(">I", header)
            message = json.loads(await reader.readexactly(length))
            if message["type"] == "request":
                req = message["payload"]
                if args.late > 0:
                    start(take_up_late(req))
                else:
                    take_up(req)
            elif message["type"] == "cancel" and args.broken != "cancel":
                stop = running.get(message["payload"].get("request_id"))
                if stop is not None and not stop.done():
                    stop.set_result(None)
    except (asyncio.IncompleteReadError, ValueError, KeyError, ConnectionError):
        writer.close()


async def main():
    host, port = args.tcp_socket.rsplit(":", 1)
    server = await asyncio.start_server(serve, host, int(port))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()


asyncio.run(main())
