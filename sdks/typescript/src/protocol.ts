/** Wire types of the RRQ runner protocol, version "2". */

/** The protocol version this SDK speaks. */
export const PROTOCOL_VERSION = "2";

/** Reserved values of `error.type`. */
export const ErrorTypes = {
  HANDLER_NOT_FOUND: "handler_not_found",
  CANCELLED: "cancelled",
  TIMEOUT: "timeout",
} as const;

/** Messages the SDK produces itself. */
export const Messages = {
  UNSUPPORTED_VERSION: "Unsupported protocol version",
  BUSY: "Runner busy: too many in-flight requests",
  DEADLINE_EXCEEDED: "Job deadline exceeded",
  TIMED_OUT: "Job execution timed out",
  CANCELLED: "Job cancelled",
  SHUTTING_DOWN: "Runner shutting down",
} as const;

/** `context` of a request. */
export interface ExecutionContext {
  job_id: string;
  attempt: number;
  enqueue_time: string;
  queue_name: string;
  deadline?: string | null;
  trace_context?: Record<string, string> | null;
  correlation_context?: Record<string, string> | null;
  worker_id?: string | null;
}

/** Orchestrator → runner: run one attempt of a job. */
export interface ExecutionRequest {
  protocol_version?: string;
  request_id: string;
  job_id: string;
  function_name: string;
  params?: Record<string, unknown>;
  context: ExecutionContext;
}

/** The `error` member of an outcome. */
export interface OutcomeError {
  message: string;
  type: string | null;
  code: string | null;
  details: unknown;
}

/** Runner → orchestrator: how an attempt ended. */
export interface ExecutionOutcome {
  job_id: string;
  request_id: string | null;
  status: "success" | "retry" | "timeout" | "error";
  result: unknown;
  error: OutcomeError | null;
  retry_after_seconds: number | null;
}

/** Orchestrator → runner: stop a request (or every request of a job). */
export interface CancelRequest {
  protocol_version?: string;
  job_id: string;
  request_id?: string | null;
  hard_kill?: boolean;
}

/** One frame's payload. */
export type Envelope =
  | { type: "request"; payload: ExecutionRequest }
  | { type: "response"; payload: ExecutionOutcome }
  | { type: "cancel"; payload: CancelRequest };

/** Why an envelope was rejected (the connection is then closed). */
export class ProtocolError extends Error {
  override name = "ProtocolError";
}

function isString(v: unknown): v is string {
  return typeof v === "string";
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/** Validates a decoded frame as an envelope sent by an orchestrator. */
export function parseEnvelope(value: unknown): Envelope {
  if (!isObject(value) || !isString(value.type) || !isObject(value.payload)) {
    throw new ProtocolError("envelope needs a string 'type' and an object 'payload'");
  }
  const p = value.payload;
  switch (value.type) {
    case "request": {
      const c = p.context;
      if (!isString(p.request_id) || !isString(p.job_id) || !isString(p.function_name) || !isObject(c)) {
        throw new ProtocolError("request needs request_id, job_id, function_name and context");
      }
      if (!isString(c.job_id) || typeof c.attempt !== "number" || !isString(c.enqueue_time) || !isString(c.queue_name)) {
        throw new ProtocolError("request context needs job_id, attempt, enqueue_time and queue_name");
      }
      if (p.params !== undefined && p.params !== null && !isObject(p.params)) {
        throw new ProtocolError("request params must be an object");
      }
      return { type: "request", payload: p as unknown as ExecutionRequest };
    }
    case "cancel":
      if (!isString(p.job_id)) throw new ProtocolError("cancel needs job_id");
      return { type: "cancel", payload: p as unknown as CancelRequest };
    case "response":
      return { type: "response", payload: p as unknown as ExecutionOutcome };
    default:
      throw new ProtocolError(`unknown message type '${value.type}'`);
  }
}
