/**
 * The example TypeScript runner: the `rrq runner check` handlers plus a few
 * demo handlers; `main.ts` serves them.
 */

import { setTimeout as sleep } from "node:timers/promises";

import { HandlerError, Registry, RetryError } from "../src/index.js";

/** Registers `rrq_check.echo`, `rrq_check.sleep`, `rrq_check.fail` and `rrq_check.retry`. */
export function registerCheckHandlers(registry: Registry): Registry {
  return registry
    .register("rrq_check.echo", (params, ctx) => ({
      params,
      job_id: ctx.jobId,
      attempt: ctx.attempt,
      trace_context: ctx.traceContext,
    }))
    .register("rrq_check.sleep", async (params, ctx) => {
      await sleep(Number(params.seconds ?? 0) * 1000, undefined, { signal: ctx.signal });
      return "slept";
    })
    .register("rrq_check.fail", (params) => {
      throw new HandlerError(String(params.message));
    })
    .register("rrq_check.retry", (params) => {
      throw new RetryError("retry requested", Number(params.delay));
    });
}

/** The example handlers. */
export function exampleRegistry(): Registry {
  const registry = registerCheckHandlers(new Registry());
  registry
    .register("noop", () => null)
    .register("echo", (params, ctx) => ({ echo: params, attempt: ctx.attempt, job_id: ctx.jobId, queue: ctx.queueName }))
    .register("sleep", async (params, ctx) => {
      await sleep(Number(params.seconds ?? 0) * 1000, undefined, { signal: ctx.signal });
      return "slept";
    })
    .register("fail", (params) => {
      throw new Error(`boom: ${params.value ?? "None"}`);
    })
    .register("retry_once", (params, ctx) => {
      if (ctx.attempt <= 1) throw new RetryError("retry requested", Number(params.delay ?? 0.01));
      return `ok:${params.value ?? "None"}`;
    });
  return registry;
}
