import assert from "node:assert/strict";
import { test } from "node:test";

import { FrameDecoder, FrameError, encodeFrame } from "../src/index.js";

test("a frame is a big-endian u32 payload length followed by compact JSON", () => {
  const frame = encodeFrame({ type: "cancel", payload: { job_id: "j" } });
  const json = '{"type":"cancel","payload":{"job_id":"j"}}';
  assert.equal(frame.readUInt32BE(0), Buffer.byteLength(json));
  assert.equal(frame.subarray(4).toString("utf8"), json);
});

test("frames split across reads and packed into one read decode in order", () => {
  const a = encodeFrame({ n: 1, text: "héllo" });
  const b = encodeFrame({ n: 2 });
  const bytes = Buffer.concat([a, b]);
  const d = new FrameDecoder();
  const got: unknown[] = [];
  for (let i = 0; i < bytes.length; i += 3) got.push(...d.push(bytes.subarray(i, i + 3)));
  assert.deepEqual(got, [{ n: 1, text: "héllo" }, { n: 2 }]);
  assert.equal(d.pending, 0);
  assert.deepEqual(new FrameDecoder().push(bytes), [{ n: 1, text: "héllo" }, { n: 2 }]);
});

test("empty, oversized and non-object frames are protocol errors", () => {
  assert.throws(() => new FrameDecoder().push(Buffer.from([0, 0, 0, 0])), FrameError);
  const big = Buffer.alloc(4);
  big.writeUInt32BE(101, 0);
  assert.throws(() => new FrameDecoder(100).push(big), /exceeds the maximum of 100/);
  assert.throws(() => encodeFrame({ s: "x".repeat(100) }, 10), FrameError);
  const notJson = Buffer.concat([Buffer.from([0, 0, 0, 3]), Buffer.from("{x}")]);
  assert.throws(() => new FrameDecoder().push(notJson), /not JSON/);
  const array = Buffer.concat([Buffer.from([0, 0, 0, 2]), Buffer.from("[]")]);
  assert.throws(() => new FrameDecoder().push(array), /not a JSON object/);
});
