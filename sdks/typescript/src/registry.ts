/** Handlers by function name, and what a handler knows about its attempt. */

/** Everything a handler may want to know about the attempt it runs. */
export interface JobContext {
  /** The job id. */
  jobId: string;
  /** This attempt's request id (fresh per attempt). */
  requestId: string;
  /** The handler name the request asked for. */
  functionName: string;
  /** 1-based attempt number. */
  attempt: number;
  /** When the job was enqueued, if the time parses. */
  enqueueTime: Date | null;
  /** Full key of the queue the job came from (`rrq:queue:default`). */
  queueName: string;
  /** When the orchestrator gives up on this attempt; the SDK aborts `signal` then. */
  deadline: Date | null;
  /** Trace propagation carrier (W3C `traceparent`/`tracestate`, ...), as enqueued. */
  traceContext: Record<string, string> | null;
  /** Correlation attributes, as enqueued. */
  correlationContext: Record<string, string> | null;
  /** The orchestrator's worker id. */
  workerId: string | null;
  /**
   * Aborted when the attempt is cancelled (cancel frame, shutdown, lost
   * connection) or reaches its deadline; `signal.reason` is `"cancel"`,
   * `"shutdown"`, `"disconnect"` or `"deadline"`. Pass it to `fetch`, timers
   * and child processes so the work really stops.
   */
  signal: AbortSignal;
}

/** A job handler: the job's params and the attempt's context in, a JSON-serialisable result out. */
export type Handler = (params: Record<string, unknown>, ctx: JobContext) => unknown | Promise<unknown>;

/** Handlers by function name. */
export class Registry {
  private readonly handlers = new Map<string, Handler>();

  /** Registers `handler` under `name`, replacing any handler of that name. */
  register(name: string, handler: Handler): this {
    if (typeof handler !== "function") throw new TypeError(`handler for '${name}' must be a function`);
    this.handlers.set(name, handler);
    return this;
  }

  /** The handler of that name, if any. */
  get(name: string): Handler | undefined {
    return this.handlers.get(name);
  }

  /** Whether a handler of that name exists. */
  has(name: string): boolean {
    return this.handlers.has(name);
  }

  /** The registered names. */
  names(): string[] {
    return [...this.handlers.keys()];
  }
}
