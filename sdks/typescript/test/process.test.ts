import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import * as net from "node:net";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { Client, request } from "./client.js";

const MAIN = fileURLToPath(new URL("../examples/main.js", import.meta.url));

async function freePort(): Promise<number> {
  const s = net.createServer();
  s.listen(0, "127.0.0.1");
  await once(s, "listening");
  const port = (s.address() as net.AddressInfo).port;
  s.close();
  await once(s, "close");
  return port;
}

async function connectWithin(port: number, ms: number): Promise<Client> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await Client.connect(port);
    } catch (e) {
      if (Date.now() > deadline) throw e;
      // sleep-ok: readiness poll with a deadline, as the orchestrator does.
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

test("the example runner listens on --tcp-socket and exits 0 on SIGTERM", async () => {
  const port = await freePort();
  const child = spawn(process.execPath, [MAIN, "--tcp-socket", `127.0.0.1:${port}`], { stdio: "inherit" });
  const c = await connectWithin(port, 10_000);
  const out = await c.call(request("rrq_check.echo", { x: 1 }));
  assert.deepEqual(out.result, { params: { x: 1 }, job_id: out.job_id, attempt: 1, trace_context: null });
  const exited = once(child, "exit");
  child.kill("SIGTERM");
  const [code, sig] = await exited;
  assert.equal(code, 0);
  assert.equal(sig, null);
});

test("the example runner falls back to RRQ_RUNNER_TCP_SOCKET and fails without an address", async () => {
  const port = await freePort();
  const child = spawn(process.execPath, [MAIN], {
    stdio: "inherit",
    env: { ...process.env, RRQ_RUNNER_TCP_SOCKET: `127.0.0.1:${port}` },
  });
  const c = await connectWithin(port, 10_000);
  assert.equal((await c.call(request("rrq_check.sleep", { seconds: 0 }))).result, "slept");
  const exited = once(child, "exit");
  child.kill("SIGINT");
  assert.equal((await exited)[0], 0);
  const env = { ...process.env };
  delete env.RRQ_RUNNER_TCP_SOCKET;
  const bare = spawn(process.execPath, [MAIN], { stdio: ["ignore", "ignore", "pipe"], env });
  let stderr = "";
  bare.stderr.on("data", (d) => (stderr += d));
  const [code] = await once(bare, "exit");
  assert.equal(code, 1);
  assert.match(stderr, /no listen address/);
});
