/** How a handler says it failed. Anything else thrown becomes a plain `error`. */

/** Fail the attempt (`status = error`); the orchestrator retries with backoff. */
export class HandlerError extends Error {
  override name = "HandlerError";
  /** `error.type` (machine-readable kind). */
  readonly type: string | null;
  /** `error.code` (application code). */
  readonly code: string | null;
  /** `error.details` (structured details). */
  readonly details: unknown;

  constructor(message: string, options: { type?: string; code?: string; details?: unknown } = {}) {
    super(message);
    this.type = options.type ?? null;
    this.code = options.code ?? null;
    this.details = options.details ?? null;
  }
}

/** Ask to be retried (`status = retry`), after `afterSeconds` if given. */
export class RetryError extends Error {
  override name = "RetryError";
  constructor(
    message = "Job requested retry",
    readonly afterSeconds: number | null = null,
  ) {
    super(message);
  }
}

/** Give up because time ran out (`status = timeout`, never retried). */
export class HandlerTimeoutError extends Error {
  override name = "HandlerTimeoutError";
  constructor(message = "Job execution timed out") {
    super(message);
  }
}
