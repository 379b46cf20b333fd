"""A small protocol-2 runner for the managed-mode tests (stdlib only).

Started as `python3 fake_runner.py [extra args] --tcp-socket 127.0.0.1:PORT`.
Behaviour is chosen by environment variables:

  FAKE_LOG=path             append one JSON line per event (start, connect,
                            request, cancel, close, term) to path
  FAKE_FAIL_AT_START=text   print "fatal: text" to stderr and exit 3
  FAKE_IGNORE_TERM=1        ignore SIGTERM (only SIGKILL stops it)
  FAKE_CRASH_LOOP=marker    while the file marker exists, exit 7 at start
  FAKE_NO_LISTEN=1          never listen (and never exit)
  FAKE_FOREIGN=pidfile      unless pidfile exists: do not listen, start a
                            detached process (its own session) listening on
                            the port instead, and write its pid to pidfile

Handlers: info, sleep {seconds}, hang, stubborn (starts a child, then
ignores cancellation), env {name}, crash, spawn_child, print {stdout,
stderr}; anything else echoes its params.
"""

import asyncio
import json
import os
import signal
import struct
import subprocess
import sys
import time

ADDR = sys.argv[sys.argv.index("--tcp-socket") + 1]
HOST, PORT = ADDR.rsplit(":", 1)
PORT = int(PORT)
LOG = os.environ.get("FAKE_LOG")
TASKS = {}
CONNECTIONS = 0


def log(event, **fields):
    if LOG:
        line = json.dumps({"event": event, "pid": os.getpid(), "port": PORT, "t": time.time(), **fields})
        with open(LOG, "a") as f:
            f.write(line + "\n")


def outcome(req, status, result=None, error=None):
    return {
        "job_id": req["job_id"],
        "request_id": req["request_id"],
        "status": status,
        "result": result,
        "error": error,
        "retry_after_seconds": None,
    }


def send(writer, payload):
    data = json.dumps({"type": "response", "payload": payload}).encode()
    writer.write(struct.pack(">I", len(data)) + data)


def stdin_target():
    try:
        return os.readlink("/proc/self/fd/0")
    except OSError as e:
        return str(e)


async def run(req, writer):
    fn = req["function_name"]
    params = req.get("params") or {}
    try:
        if fn == "info":
            result = {
                "argv": sys.argv[1:],
                "env": {k: os.environ.get(k) for k in ("RRQ_RUNNER_TCP_SOCKET", "RRQ_RUNNER_OWNER", "FAKE_EXTRA")},
                "cwd": os.getcwd(),
                "pid": os.getpid(),
                "pgid": os.getpgid(0),
                "stdin": stdin_target(),
            }
        elif fn == "sleep":
            await asyncio.sleep(params.get("seconds", 0))
            result = {"pid": os.getpid()}
        elif fn == "hang":
            await asyncio.Event().wait()
        elif fn == "stubborn":
            child = subprocess.Popen(["sleep", "1000"])
            log("stubborn", child=child.pid)
            while True:
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    log("cancel_ignored", request_id=req["request_id"])
        elif fn == "drop_connection":
            # Breaks the connection under the request but keeps "working" on
            # it, as a runner shutting down gracefully or a buggy one might.
            log("dropping", pid=os.getpid())
            writer.transport.abort()
            await asyncio.Event().wait()
        elif fn == "env":
            result = {"value": os.environ.get(params["name"]), "present": params["name"] in os.environ}
        elif fn == "crash":
            sys.stderr.write("about to crash\n")
            sys.stderr.flush()
            os._exit(1)
        elif fn == "spawn_child":
            child = subprocess.Popen(["sleep", "1000"])
            result = {"pid": os.getpid(), "child": child.pid}
        elif fn == "print":
            print(params.get("stdout", ""), flush=True)
            print(params.get("stderr", ""), file=sys.stderr, flush=True)
            result = None
        else:
            result = {"echo": params}
        send(writer, outcome(req, "success", result))
    except asyncio.CancelledError:
        error = {"message": "Job cancelled", "type": "cancelled", "code": None, "details": None}
        send(writer, outcome(req, "error", None, error))
    finally:
        TASKS.pop(req["request_id"], None)


async def handle(reader, writer):
    global CONNECTIONS
    CONNECTIONS += 1
    conn = CONNECTIONS
    log("connect", conn=conn)
    frames = 0
    partial = 0
    try:
        while True:
            (length,) = struct.unpack(">I", await reader.readexactly(4))
            message = json.loads(await reader.readexactly(length))
            frames += 1
            payload = message["payload"]
            if message["type"] == "request":
                log("request", conn=conn, request_id=payload["request_id"], function=payload["function_name"])
                TASKS[payload["request_id"]] = (payload["job_id"], asyncio.ensure_future(run(payload, writer)))
            elif message["type"] == "cancel":
                log("cancel", conn=conn, request_id=payload.get("request_id"), job_id=payload["job_id"])
                for request_id, (job_id, task) in list(TASKS.items()):
                    wanted = payload.get("request_id")
                    if job_id == payload["job_id"] and wanted in (None, request_id):
                        task.cancel()
    except asyncio.IncompleteReadError as e:
        partial = len(e.partial)
    except ConnectionError:
        pass
    # frames: whole frames received; partial: bytes of a cut-off one.
    log("close", conn=conn, frames=frames, partial=partial)


FOREIGN_LISTENER = """
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(16)
time.sleep(600)
"""


async def main():
    log("boot")
    marker = os.environ.get("FAKE_CRASH_LOOP")
    if marker and os.path.exists(marker):
        sys.stderr.write("crash-looping on purpose\n")
        sys.exit(7)
    if os.environ.get("FAKE_FAIL_AT_START"):
        sys.stderr.write("fatal: " + os.environ["FAKE_FAIL_AT_START"] + "\n")
        sys.stderr.flush()
        sys.exit(3)
    if os.environ.get("FAKE_IGNORE_TERM"):
        signal.signal(signal.SIGTERM, lambda *_: log("term"))
    if os.environ.get("FAKE_NO_LISTEN"):
        await asyncio.Event().wait()
    foreign = os.environ.get("FAKE_FOREIGN")
    if foreign and not os.path.exists(foreign):
        child = subprocess.Popen([sys.executable, "-c", FOREIGN_LISTENER, str(PORT)], start_new_session=True)
        with open(foreign, "a") as f:
            f.write(f"{child.pid}\n")
        await asyncio.Event().wait()
    server = await asyncio.start_server(handle, HOST, PORT)
    log("start", argv=sys.argv[1:])
    async with server:
        await server.serve_forever()


asyncio.run(main())
