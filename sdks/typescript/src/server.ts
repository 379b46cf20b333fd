/** Serving the runner protocol: accept connections, run requests, answer. */

import * as net from "node:net";

import { HandlerError, HandlerTimeoutError, RetryError } from "./errors.js";
import { FrameDecoder, FrameError, MAX_FRAME_BYTES, encodeFrame } from "./frame.js";
import {
  type CancelRequest,
  ErrorTypes,
  type ExecutionOutcome,
  type ExecutionRequest,
  Messages,
  PROTOCOL_VERSION,
  ProtocolError,
  parseEnvelope,
} from "./protocol.js";
import { type JobContext, Registry } from "./registry.js";

/** Requests one connection may have running (the protocol's limit). */
export const MAX_IN_FLIGHT_PER_CONNECTION = 64;

/** Tunables of a {@link Server}; the defaults are the protocol's limits. */
export interface ServeOptions {
  /** Requests one connection may have running; more are answered `Runner busy`. */
  maxInFlightPerConnection?: number;
  /** Largest frame payload accepted or sent. */
  maxFrameBytes?: number;
  /** After {@link Server.close}, how long running requests may finish before they are cancelled. */
  drainGraceMs?: number;
  /** Where diagnostics go (default: stderr). */
  log?: (line: string) => void;
}

type AbortKind = "cancel" | "deadline" | "shutdown" | "disconnect";

interface Running {
  jobId: string;
  controller: AbortController;
  done: Promise<void>;
}

interface Connection {
  socket: net.Socket;
  inFlight: number;
  closed: boolean;
  requests: Set<string>;
}

/** The longest delay `setTimeout` accepts. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Parses an RFC 3339 time; a time without offset is UTC, as in the Python runner. */
export function parseTime(text: string | null | undefined): Date | null {
  if (!text) return null;
  const hasOffset = /([zZ]|[+-]\d\d:?\d\d)$/.test(text);
  const ms = Date.parse(hasOffset ? text : `${text}Z`);
  return Number.isNaN(ms) ? null : new Date(ms);
}

function outcome(request: ExecutionRequest, status: ExecutionOutcome["status"]): ExecutionOutcome {
  return {
    job_id: request.job_id,
    request_id: request.request_id,
    status,
    result: null,
    error: null,
    retry_after_seconds: null,
  };
}

function failure(request: ExecutionRequest, message: string, type: string | null = null): ExecutionOutcome {
  return { ...outcome(request, "error"), error: { message, type, code: null, details: null } };
}

function timedOut(request: ExecutionRequest, message: string): ExecutionOutcome {
  return { ...outcome(request, "timeout"), error: { message, type: ErrorTypes.TIMEOUT, code: null, details: null } };
}

/** The outcome for what a handler threw. */
function thrown(request: ExecutionRequest, e: unknown): ExecutionOutcome {
  if (e instanceof RetryError) {
    return {
      ...outcome(request, "retry"),
      error: { message: e.message, type: null, code: null, details: null },
      retry_after_seconds: e.afterSeconds,
    };
  }
  if (e instanceof HandlerTimeoutError) return timedOut(request, e.message || Messages.TIMED_OUT);
  if (e instanceof HandlerError) {
    const message = e.message || "Unhandled handler error";
    return { ...outcome(request, "error"), error: { message, type: e.type, code: e.code, details: e.details } };
  }
  const message = e instanceof Error ? e.message : String(e);
  return failure(request, message || "Unhandled handler error");
}

/** A listening runner: handlers served on one loopback address. */
export class Server {
  private readonly running = new Map<string, Running>();
  private readonly connections = new Set<Connection>();
  private stopping = false;
  private closing: Promise<void> | null = null;
  private readonly maxInFlight: number;
  private readonly maxFrameBytes: number;
  private readonly drainGraceMs: number;
  private readonly log: (line: string) => void;

  private constructor(
    private readonly registry: Registry,
    private readonly listener: net.Server,
    options: ServeOptions,
  ) {
    this.maxInFlight = options.maxInFlightPerConnection ?? MAX_IN_FLIGHT_PER_CONNECTION;
    this.maxFrameBytes = options.maxFrameBytes ?? MAX_FRAME_BYTES;
    this.drainGraceMs = options.drainGraceMs ?? 1000;
    this.log = options.log ?? ((line) => process.stderr.write(`rrq-runner: ${line}\n`));
    listener.on("connection", (socket) => this.accept(socket));
  }

  /**
   * Listens on `host:port` (loopback only; port 0 picks a free port) and
   * serves `registry` until {@link close}.
   */
  static async listen(registry: Registry, address: SocketAddress, options: ServeOptions = {}): Promise<Server> {
    if (!isLoopback(address.host)) {
      throw new Error(`refusing to listen on ${address.host}: runners accept loopback addresses only`);
    }
    const listener = net.createServer();
    const server = new Server(registry, listener, options);
    await new Promise<void>((resolve, reject) => {
      listener.once("error", reject);
      listener.listen({ host: address.host === "localhost" ? "127.0.0.1" : address.host, port: address.port }, () => {
        listener.off("error", reject);
        resolve();
      });
    });
    return server;
  }

  /** The address actually bound. */
  get address(): SocketAddress {
    const a = this.listener.address() as net.AddressInfo;
    return { host: a.address, port: a.port };
  }

  /** Requests running now. */
  get inFlight(): number {
    return this.running.size;
  }

  /**
   * Graceful shutdown: stops accepting connections and requests, lets running
   * requests finish for the drain grace, cancels the rest (they answer
   * `cancelled`), flushes every outcome and closes every connection.
   */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    this.stopping = true;
    const stopped = new Promise<void>((resolve) => this.listener.close(() => resolve()));
    const all = () => Promise.all([...this.running.values()].map((r) => r.done));
    let timer: NodeJS.Timeout | undefined;
    const grace = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, this.drainGraceMs);
    });
    await Promise.race([all(), grace]);
    clearTimeout(timer);
    for (const r of this.running.values()) r.controller.abort("shutdown" satisfies AbortKind);
    await all();
    await Promise.all(
      [...this.connections].map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.socket.destroyed) return resolve();
            c.socket.end(() => resolve());
          }),
      ),
    );
    await stopped;
  }

  private accept(socket: net.Socket): void {
    socket.setNoDelay(true);
    const conn: Connection = { socket, inFlight: 0, closed: false, requests: new Set() };
    this.connections.add(conn);
    const decoder = new FrameDecoder(this.maxFrameBytes);
    const drop = () => {
      if (conn.closed) return;
      conn.closed = true;
      this.connections.delete(conn);
      // The orchestrator is gone from this connection: its requests cannot
      // be answered any more, so they are stopped.
      for (const id of conn.requests) this.running.get(id)?.controller.abort("disconnect" satisfies AbortKind);
    };
    socket.on("data", (chunk: Buffer) => {
      if (conn.closed) return;
      try {
        for (const frame of decoder.push(chunk)) this.dispatch(conn, frame);
      } catch (e) {
        if (!(e instanceof FrameError || e instanceof ProtocolError)) throw e;
        this.log(`closing connection after a protocol error: ${e.message}`);
        drop();
        socket.destroy();
      }
    });
    socket.on("end", () => {
      drop();
      socket.end();
    });
    socket.on("close", drop);
    socket.on("error", (e) => {
      this.log(`connection error: ${e.message}`);
      drop();
    });
  }

  private dispatch(conn: Connection, frame: unknown): void {
    const envelope = parseEnvelope(frame);
    switch (envelope.type) {
      case "request":
        this.start(conn, envelope.payload);
        return;
      case "cancel":
        this.cancel(envelope.payload);
        return;
      case "response":
        throw new ProtocolError("unexpected message type: response");
    }
  }

  private cancel(cancel: CancelRequest): void {
    if (cancel.protocol_version !== undefined && cancel.protocol_version !== PROTOCOL_VERSION) return;
    if (cancel.request_id) {
      const r = this.running.get(cancel.request_id);
      if (r && r.jobId === cancel.job_id) r.controller.abort("cancel" satisfies AbortKind);
      return;
    }
    for (const r of this.running.values()) {
      if (r.jobId === cancel.job_id) r.controller.abort("cancel" satisfies AbortKind);
    }
  }

  private send(conn: Connection, answer: ExecutionOutcome): void {
    if (conn.closed || conn.socket.destroyed) return;
    let frame: Buffer;
    try {
      frame = encodeFrame({ type: "response", payload: answer }, this.maxFrameBytes);
    } catch (e) {
      const message = `Result of '${answer.job_id}' cannot be sent: ${(e as Error).message}`;
      frame = encodeFrame({
        type: "response",
        payload: { ...answer, status: "error", result: null, error: { message, type: null, code: null, details: null } },
      });
    }
    conn.socket.write(frame);
  }

  private start(conn: Connection, request: ExecutionRequest): void {
    const version = request.protocol_version ?? PROTOCOL_VERSION;
    if (version !== PROTOCOL_VERSION) return this.send(conn, failure(request, Messages.UNSUPPORTED_VERSION));
    if (this.stopping) return this.send(conn, failure(request, Messages.SHUTTING_DOWN));
    if (conn.inFlight >= this.maxInFlight) return this.send(conn, failure(request, Messages.BUSY));
    const handler = this.registry.get(request.function_name);
    if (!handler) {
      const message = `No handler registered for function '${request.function_name}'`;
      return this.send(conn, failure(request, message, ErrorTypes.HANDLER_NOT_FOUND));
    }
    const deadline = parseTime(request.context.deadline);
    if (deadline && deadline.getTime() <= Date.now()) {
      return this.send(conn, timedOut(request, Messages.DEADLINE_EXCEEDED));
    }
    const controller = new AbortController();
    const ctx: JobContext = {
      jobId: request.job_id,
      requestId: request.request_id,
      functionName: request.function_name,
      attempt: request.context.attempt,
      enqueueTime: parseTime(request.context.enqueue_time),
      queueName: request.context.queue_name,
      deadline,
      traceContext: request.context.trace_context ?? null,
      correlationContext: request.context.correlation_context ?? null,
      workerId: request.context.worker_id ?? null,
      signal: controller.signal,
    };
    conn.inFlight += 1;
    conn.requests.add(request.request_id);
    const done = this.run(conn, request, handler, ctx, controller, deadline).finally(() => {
      conn.inFlight -= 1;
      conn.requests.delete(request.request_id);
      this.running.delete(request.request_id);
    });
    this.running.set(request.request_id, { jobId: request.job_id, controller, done });
  }

  private async run(
    conn: Connection,
    request: ExecutionRequest,
    handler: (params: Record<string, unknown>, ctx: JobContext) => unknown,
    ctx: JobContext,
    controller: AbortController,
    deadline: Date | null,
  ): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const arm = () => {
      if (!deadline) return;
      const left = deadline.getTime() - Date.now();
      if (left <= 0) controller.abort("deadline" satisfies AbortKind);
      else timer = setTimeout(arm, Math.min(left, MAX_TIMER_MS));
    };
    arm();
    const aborted = new Promise<AbortKind>((resolve) => {
      const signal = controller.signal;
      if (signal.aborted) resolve(signal.reason as AbortKind);
      signal.addEventListener("abort", () => resolve(signal.reason as AbortKind), { once: true });
    });
    const work = (async () => {
      try {
        const value = await handler(request.params ?? {}, ctx);
        const result = value === undefined ? null : value;
        JSON.stringify(result);
        return { ...outcome(request, "success"), result };
      } catch (e) {
        return thrown(request, e);
      }
    })();
    // The answer is whichever comes first: the handler's own, or the abort.
    // A handler that ignores its signal keeps running, but its late result
    // is dropped.
    const first = await Promise.race([work, aborted]);
    clearTimeout(timer);
    let answer: ExecutionOutcome | null;
    if (typeof first === "string") {
      if (!controller.signal.aborted) controller.abort(first);
      answer =
        first === "deadline"
          ? timedOut(request, Messages.TIMED_OUT)
          : first === "disconnect"
            ? null
            : failure(request, Messages.CANCELLED, ErrorTypes.CANCELLED);
    } else {
      answer = first;
    }
    if (answer) this.send(conn, answer);
  }
}

/** A host and port. */
export interface SocketAddress {
  host: string;
  port: number;
}

function isLoopback(host: string): boolean {
  const bare = host.replace(/^\[(.*)\]$/, "$1").toLowerCase();
  if (bare === "localhost" || bare === "::1") return true;
  return net.isIPv4(bare) && bare.startsWith("127.");
}

/** The command-line flag carrying the listen address. */
export const TCP_SOCKET_FLAG = "--tcp-socket";
/** The environment variable carrying the listen address. */
export const TCP_SOCKET_ENV = "RRQ_RUNNER_TCP_SOCKET";

/** Parses `host:port` (IPv6 in brackets). */
export function parseSocket(text: string): SocketAddress {
  const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(text.trim());
  if (!m) throw new Error(`invalid listen address '${text}': expected host:port`);
  const port = Number(m[2]);
  if (port < 1 || port > 65535) throw new Error(`invalid listen address '${text}': port must be 1-65535`);
  return { host: m[1]!.replace(/^\[(.*)\]$/, "$1"), port };
}

/** The listen address: `--tcp-socket HOST:PORT` (or `=HOST:PORT`), else `RRQ_RUNNER_TCP_SOCKET`. */
export function socketFromArgs(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === TCP_SOCKET_FLAG) return argv[i + 1];
    if (arg.startsWith(`${TCP_SOCKET_FLAG}=`)) return arg.slice(TCP_SOCKET_FLAG.length + 1);
  }
  return env[TCP_SOCKET_ENV] || undefined;
}

/**
 * The entry point of a runner program: listens on the address given by the
 * orchestrator, serves `registry`, and shuts down gracefully on SIGTERM or
 * SIGINT, or when the parent process goes away; then exits the process.
 */
export async function runFromArgs(registry: Registry, options: ServeOptions = {}): Promise<void> {
  const text = socketFromArgs(process.argv.slice(2));
  if (!text) {
    process.stderr.write("rrq-runner: no listen address: pass --tcp-socket host:port or set RRQ_RUNNER_TCP_SOCKET\n");
    process.exit(1);
  }
  let server: Server;
  try {
    server = await Server.listen(registry, parseSocket(text), options);
  } catch (e) {
    process.stderr.write(`rrq-runner: ${(e as Error).message}\n`);
    process.exit(1);
  }
  const parent = process.ppid;
  const stop = () => {
    void server.close().then(() => process.exit(0));
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
  setInterval(() => {
    if (process.ppid !== parent) stop();
  }, 1000).unref();
}
