/** A test client speaking frames to a runner. */

import * as net from "node:net";
import { once } from "node:events";

import { type ExecutionOutcome, type ExecutionRequest, FrameDecoder, encodeFrame } from "../src/index.js";

let next = 0;

/** A request for `fn` with `params`; `context` fields override the defaults. */
export function request(
  fn: string,
  params: Record<string, unknown> = {},
  context: Partial<ExecutionRequest["context"]> = {},
): ExecutionRequest {
  next += 1;
  const jobId = `job-${process.pid}-${next}`;
  return {
    protocol_version: "2",
    request_id: `req-${process.pid}-${next}`,
    job_id: jobId,
    function_name: fn,
    params,
    context: {
      job_id: jobId,
      attempt: 1,
      enqueue_time: new Date().toISOString(),
      queue_name: "rrq:queue:default",
      deadline: null,
      trace_context: null,
      correlation_context: null,
      worker_id: "test-worker",
      ...context,
    },
  };
}

/** One connection; messages are queued as they arrive. */
export class Client {
  private readonly decoder = new FrameDecoder();
  private readonly queue: unknown[] = [];
  private waiters: Array<() => void> = [];
  closed = false;

  private constructor(readonly socket: net.Socket) {
    socket.on("data", (chunk: Buffer) => {
      this.queue.push(...this.decoder.push(chunk));
      this.wake();
    });
    socket.on("close", () => {
      this.closed = true;
      this.wake();
    });
    socket.on("error", () => {});
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  static async connect(port: number): Promise<Client> {
    const socket = net.connect({ host: "127.0.0.1", port });
    await once(socket, "connect");
    return new Client(socket);
  }

  send(message: unknown): void {
    this.socket.write(encodeFrame(message));
  }

  raw(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  request(req: ExecutionRequest): void {
    this.send({ type: "request", payload: req });
  }

  /** The next response, or `null` once the runner closed the connection. */
  async next(): Promise<ExecutionOutcome | null> {
    for (;;) {
      const m = this.queue.shift() as { type: string; payload: ExecutionOutcome } | undefined;
      if (m) {
        if (m.type !== "response") throw new Error(`unexpected ${m.type}`);
        return m.payload;
      }
      if (this.closed) return null;
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  /** Sends `req` and returns its response. */
  async call(req: ExecutionRequest): Promise<ExecutionOutcome> {
    this.request(req);
    const out = await this.next();
    if (!out) throw new Error("connection closed without an answer");
    return out;
  }

  close(): void {
    this.socket.end();
  }
}

/** A promise with its resolve function, to await events from handlers. */
export function signal<T = void>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}
