/**
 * The TypeScript runner SDK for RRQ: register handlers, serve them to an
 * orchestrator over the runner protocol (version "2", docs/RUNNER_PROTOCOL.md).
 */

export { HandlerError, HandlerTimeoutError, RetryError } from "./errors.js";
export { FrameDecoder, FrameError, MAX_FRAME_BYTES, encodeFrame } from "./frame.js";
export {
  type CancelRequest,
  type Envelope,
  ErrorTypes,
  type ExecutionContext,
  type ExecutionOutcome,
  type ExecutionRequest,
  Messages,
  type OutcomeError,
  PROTOCOL_VERSION,
  ProtocolError,
  parseEnvelope,
} from "./protocol.js";
export { type Handler, type JobContext, Registry } from "./registry.js";
export {
  MAX_IN_FLIGHT_PER_CONNECTION,
  type ServeOptions,
  Server,
  type SocketAddress,
  TCP_SOCKET_ENV,
  TCP_SOCKET_FLAG,
  parseSocket,
  parseTime,
  runFromArgs,
  socketFromArgs,
} from "./server.js";
