import assert from "node:assert/strict";
import { after, test } from "node:test";

import {
  HandlerError,
  HandlerTimeoutError,
  type JobContext,
  Registry,
  RetryError,
  Server,
  parseSocket,
  parseTime,
  socketFromArgs,
} from "../src/index.js";
import { Client, request, signal } from "./client.js";

const servers: Server[] = [];
after(async () => {
  await Promise.all(servers.map((s) => s.close()));
});

async function serve(registry: Registry, options = {}): Promise<number> {
  const server = await Server.listen(registry, { host: "127.0.0.1", port: 0 }, { log: () => {}, ...options });
  servers.push(server);
  return server.address.port;
}

/** A handler that reports when it starts and how its signal ended. */
function blocking() {
  const started = signal<JobContext>();
  const aborted = signal<unknown>();
  const handler = (_: Record<string, unknown>, ctx: JobContext) => {
    started.resolve(ctx);
    return new Promise((_resolve, reject) => {
      ctx.signal.addEventListener("abort", () => {
        aborted.resolve(ctx.signal.reason);
        reject(new Error("aborted"));
      });
    });
  };
  return { started, aborted, handler };
}

test("a result becomes success and the handler sees the request's context", async () => {
  let seen: JobContext | undefined;
  const port = await serve(
    new Registry().register("echo", (params, ctx) => {
      seen = ctx;
      return { params };
    }),
  );
  const c = await Client.connect(port);
  const trace = { traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" };
  const req = request("echo", { a: [1, { b: null }] }, {
    attempt: 2,
    trace_context: trace,
    correlation_context: { tenant: "t1" },
    deadline: "2999-01-01T00:00:00.123456789Z",
  });
  const out = await c.call(req);
  assert.deepEqual(out, {
    job_id: req.job_id,
    request_id: req.request_id,
    status: "success",
    result: { params: { a: [1, { b: null }] } },
    error: null,
    retry_after_seconds: null,
  });
  assert.equal(seen?.attempt, 2);
  assert.equal(seen?.requestId, req.request_id);
  assert.deepEqual(seen?.traceContext, trace);
  assert.deepEqual(seen?.correlationContext, { tenant: "t1" });
  assert.equal(seen?.workerId, "test-worker");
  assert.equal(seen?.queueName, "rrq:queue:default");
  assert.equal(seen?.deadline?.toISOString(), "2999-01-01T00:00:00.123Z");
  c.close();
});

test("failures map to error, retry and timeout outcomes", async () => {
  const port = await serve(
    new Registry()
      .register("plain", () => {
        throw new Error("boom");
      })
      .register("empty", () => {
        throw new Error("");
      })
      .register("typed", () => {
        throw new HandlerError("bad input", { type: "validation", code: "E42", details: { field: "x" } });
      })
      .register("retry", () => {
        throw new RetryError("later", 2.5);
      })
      .register("timeout", () => {
        throw new HandlerTimeoutError();
      })
      .register("undefined", () => undefined),
  );
  const c = await Client.connect(port);
  const plain = await c.call(request("plain"));
  assert.equal(plain.status, "error");
  assert.deepEqual(plain.error, { message: "boom", type: null, code: null, details: null });
  assert.equal((await c.call(request("empty"))).error?.message, "Unhandled handler error");
  const typed = await c.call(request("typed"));
  assert.deepEqual(typed.error, { message: "bad input", type: "validation", code: "E42", details: { field: "x" } });
  const retry = await c.call(request("retry"));
  assert.equal(retry.status, "retry");
  assert.equal(retry.retry_after_seconds, 2.5);
  assert.equal(retry.error?.message, "later");
  const timeout = await c.call(request("timeout"));
  assert.equal(timeout.status, "timeout");
  assert.deepEqual(timeout.error, { message: "Job execution timed out", type: "timeout", code: null, details: null });
  const none = await c.call(request("undefined"));
  assert.equal(none.status, "success");
  assert.equal(none.result, null);
  c.close();
});

test("an unknown handler is handler_not_found and another protocol version is refused", async () => {
  const port = await serve(new Registry());
  const c = await Client.connect(port);
  const out = await c.call(request("nope"));
  assert.equal(out.status, "error");
  assert.deepEqual(out.error, {
    message: "No handler registered for function 'nope'",
    type: "handler_not_found",
    code: null,
    details: null,
  });
  const v1 = { ...request("nope"), protocol_version: "1" };
  const refused = await c.call(v1);
  assert.equal(refused.status, "error");
  assert.equal(refused.error?.message, "Unsupported protocol version");
  c.close();
});

test("requests on one connection run concurrently and are answered as they finish", async () => {
  const gate = signal();
  const port = await serve(
    new Registry().register("slow", async () => {
      await gate.promise;
      return "slow";
    }).register("fast", () => "fast"),
  );
  const c = await Client.connect(port);
  const slow = request("slow");
  const fast = request("fast");
  c.request(slow);
  c.request(fast);
  const first = await c.next();
  assert.equal(first?.request_id, fast.request_id);
  gate.resolve();
  const second = await c.next();
  assert.equal(second?.request_id, slow.request_id);
  assert.equal(second?.result, "slow");
  c.close();
});

test("beyond max in flight a request is answered busy at once", async () => {
  const b = blocking();
  const port = await serve(new Registry().register("block", b.handler), { maxInFlightPerConnection: 1 });
  const c = await Client.connect(port);
  c.request(request("block"));
  await b.started.promise;
  const busy = await c.call(request("block"));
  assert.equal(busy.status, "error");
  assert.equal(busy.error?.message, "Runner busy: too many in-flight requests");
  c.close();
});

test("a cancel frame from another connection aborts the handler's signal and answers cancelled", async () => {
  const b = blocking();
  const port = await serve(new Registry().register("block", b.handler));
  const c = await Client.connect(port);
  const req = request("block");
  c.request(req);
  await b.started.promise;
  const other = await Client.connect(port);
  other.send({ type: "cancel", payload: { protocol_version: "2", job_id: req.job_id, request_id: req.request_id, hard_kill: false } });
  const out = await c.next();
  assert.equal(await b.aborted.promise, "cancel");
  assert.equal(out?.request_id, req.request_id);
  assert.equal(out?.status, "error");
  assert.deepEqual(out?.error, { message: "Job cancelled", type: "cancelled", code: null, details: null });
  other.close();
  c.close();
});

test("a cancel without request_id stops every request of the job; other versions are ignored", async () => {
  const b = blocking();
  const port = await serve(new Registry().register("block", b.handler).register("echo", () => "ok"));
  const c = await Client.connect(port);
  const req = request("block");
  c.request(req);
  await b.started.promise;
  c.send({ type: "cancel", payload: { protocol_version: "1", job_id: req.job_id } });
  c.send({ type: "cancel", payload: { job_id: "another-job" } });
  // Frames on one connection are handled in order: the echo's answer proves
  // both cancels were processed and ignored.
  assert.equal((await c.call(request("echo"))).result, "ok");
  c.send({ type: "cancel", payload: { job_id: req.job_id } });
  const out = await c.next();
  assert.equal(out?.request_id, req.request_id);
  assert.equal(out?.error?.type, "cancelled");
  c.close();
});

test("a running handler is stopped at its deadline; a passed deadline never runs it", async () => {
  const b = blocking();
  let ran = false;
  const port = await serve(
    new Registry().register("block", b.handler).register("mark", () => {
      ran = true;
    }),
  );
  const c = await Client.connect(port);
  const req = request("block", {}, { deadline: new Date(Date.now() + 200).toISOString() });
  const out = await c.call(req);
  assert.equal(await b.aborted.promise, "deadline");
  assert.equal(out.status, "timeout");
  assert.deepEqual(out.error, { message: "Job execution timed out", type: "timeout", code: null, details: null });
  const past = await c.call(request("mark", {}, { deadline: "2000-01-01T00:00:00" }));
  assert.equal(past.status, "timeout");
  assert.equal(past.error?.message, "Job deadline exceeded");
  assert.equal(ran, false);
  c.close();
});

test("a malformed frame or a response frame closes only that connection", async () => {
  const b = blocking();
  const port = await serve(new Registry().register("block", b.handler).register("echo", () => "ok"));
  const bad = await Client.connect(port);
  bad.request(request("block"));
  await b.started.promise;
  bad.raw(Buffer.concat([Buffer.from([0, 0, 0, 5]), Buffer.from("{nope")]));
  assert.equal(await bad.next(), null);
  assert.equal(await b.aborted.promise, "disconnect");
  const resp = await Client.connect(port);
  resp.send({ type: "response", payload: { job_id: "x", request_id: "y", status: "success" } });
  assert.equal(await resp.next(), null);
  const missing = await Client.connect(port);
  missing.send({ type: "request", payload: { job_id: "x" } });
  assert.equal(await missing.next(), null);
  const good = await Client.connect(port);
  assert.equal((await good.call(request("echo"))).result, "ok");
  good.close();
});

test("an empty probe connection is harmless and a closed connection aborts its requests", async () => {
  const b = blocking();
  const port = await serve(new Registry().register("block", b.handler).register("echo", () => "ok"));
  (await Client.connect(port)).close();
  const c = await Client.connect(port);
  c.request(request("block"));
  await b.started.promise;
  c.close();
  assert.equal(await b.aborted.promise, "disconnect");
  const d = await Client.connect(port);
  assert.equal((await d.call(request("echo"))).result, "ok");
  d.close();
});

test("close drains running requests, cancels the rest after the grace and refuses new ones", async () => {
  const b = blocking();
  const quick = signal();
  const quickStarted = signal();
  const registry = new Registry()
    .register("block", b.handler)
    .register("quick", async () => {
      quickStarted.resolve();
      await quick.promise;
      return "done";
    })
    .register("echo", () => "ok");
  const server = await Server.listen(registry, { host: "127.0.0.1", port: 0 }, { log: () => {}, drainGraceMs: 300 });
  const c = await Client.connect(server.address.port);
  const long = request("block");
  const short = request("quick");
  c.request(long);
  c.request(short);
  await Promise.all([b.started.promise, quickStarted.promise]);
  const closed = server.close();
  const refused = await c.call(request("echo"));
  assert.equal(refused.error?.message, "Runner shutting down");
  quick.resolve();
  const answers = [await c.next(), await c.next()];
  await closed;
  const byId = new Map(answers.map((a) => [a?.request_id, a]));
  assert.equal(byId.get(short.request_id)?.result, "done");
  assert.equal(byId.get(long.request_id)?.error?.type, "cancelled");
  assert.equal(await b.aborted.promise, "shutdown");
  assert.equal(await c.next(), null, "the connection is closed after the outcomes");
  assert.equal(server.inFlight, 0);
});

test("listen addresses: --tcp-socket, then RRQ_RUNNER_TCP_SOCKET; loopback only", async () => {
  assert.equal(socketFromArgs(["--x", "--tcp-socket", "127.0.0.1:9"], {}), "127.0.0.1:9");
  assert.equal(socketFromArgs(["--tcp-socket=[::1]:7"], {}), "[::1]:7");
  assert.equal(socketFromArgs([], { RRQ_RUNNER_TCP_SOCKET: "127.0.0.1:8" }), "127.0.0.1:8");
  assert.equal(socketFromArgs([], {}), undefined);
  assert.deepEqual(parseSocket("[::1]:7"), { host: "::1", port: 7 });
  assert.throws(() => parseSocket("127.0.0.1"), /host:port/);
  assert.throws(() => parseSocket("127.0.0.1:0"), /1-65535/);
  await assert.rejects(Server.listen(new Registry(), { host: "0.0.0.0", port: 0 }), /loopback/);
  assert.equal(parseTime("2026-01-01T00:00:00")?.toISOString(), "2026-01-01T00:00:00.000Z");
  assert.equal(parseTime("2026-01-01T01:00:00+01:00")?.toISOString(), "2026-01-01T00:00:00.000Z");
  assert.equal(parseTime("garbage"), null);
});

test("a request missing a required field closes its connection; optional fields may be absent", async () => {
  let seen: Record<string, unknown> | undefined;
  const port = await serve(
    new Registry().register("echo", (params) => {
      seen = params;
      return "ok";
    }),
  );
  const required: string[][] = [
    ["payload"],
    ["payload", "request_id"],
    ["payload", "job_id"],
    ["payload", "function_name"],
    ["payload", "context"],
    ["payload", "context", "job_id"],
    ["payload", "context", "attempt"],
    ["payload", "context", "enqueue_time"],
    ["payload", "context", "queue_name"],
  ];
  const full = () => JSON.parse(JSON.stringify({ type: "request", payload: request("echo", { a: 1 }) }));
  // The full message is served, so each closing below is the missing field's doing.
  const control = await Client.connect(port);
  control.send(full());
  assert.equal(((await control.next()) as { status?: string } | null)?.status, "success");
  for (const path of required) {
    const message = full();
    let holder = message;
    for (const key of path.slice(0, -1)) holder = holder[key];
    delete holder[path[path.length - 1]];
    const c = await Client.connect(port);
    c.send(message);
    assert.equal(await c.next(), null, `without ${path.join(".")}`);
  }
  const minimal = full();
  delete minimal.payload.protocol_version;
  delete minimal.payload.params;
  for (const key of ["deadline", "trace_context", "correlation_context", "worker_id"]) {
    delete minimal.payload.context[key];
  }
  control.send(minimal);
  const out = (await control.next()) as { status?: string; request_id?: string } | null;
  assert.equal(out?.status, "success", "no protocol_version means \"2\"");
  assert.equal(out?.request_id, minimal.payload.request_id);
  assert.deepEqual(seen, {}, "no params means {}");
  control.close();
});
