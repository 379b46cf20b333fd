/**
 * Length-prefixed frames: a 4-byte big-endian payload length, then that many
 * bytes of UTF-8 JSON. Zero-length and oversized frames are protocol errors.
 */

/** The largest payload accepted or sent (16 MiB), as in the other runners. */
export const MAX_FRAME_BYTES = 16 * 1024 * 1024;

/** A frame that breaks the framing rules or does not hold a JSON object. */
export class FrameError extends Error {
  override name = "FrameError";
}

/** Encodes one message as a frame. Throws {@link FrameError} when too large. */
export function encodeFrame(message: unknown, maxBytes = MAX_FRAME_BYTES): Buffer {
  const payload = Buffer.from(JSON.stringify(message), "utf8");
  if (payload.length > maxBytes) {
    throw new FrameError(`frame of ${payload.length} bytes exceeds the maximum of ${maxBytes} bytes`);
  }
  const header = Buffer.alloc(4);
  header.writeUInt32BE(payload.length, 0);
  return Buffer.concat([header, payload]);
}

/**
 * Incremental decoder: {@link push} bytes as they arrive, get back every
 * complete message. After a {@link FrameError} the stream is out of sync and
 * the connection must be closed.
 */
export class FrameDecoder {
  private buffer: Buffer = Buffer.alloc(0);

  constructor(private readonly maxBytes = MAX_FRAME_BYTES) {}

  /** Appends `chunk` and returns the messages it completed, in order. */
  push(chunk: Buffer): unknown[] {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    const messages: unknown[] = [];
    for (;;) {
      if (this.buffer.length < 4) return messages;
      const length = this.buffer.readUInt32BE(0);
      if (length === 0) throw new FrameError("frame announces an empty payload");
      if (length > this.maxBytes) {
        throw new FrameError(`frame of ${length} bytes exceeds the maximum of ${this.maxBytes} bytes`);
      }
      if (this.buffer.length < 4 + length) return messages;
      const payload = this.buffer.subarray(4, 4 + length);
      this.buffer = this.buffer.subarray(4 + length);
      let parsed: unknown;
      try {
        parsed = JSON.parse(payload.toString("utf8"));
      } catch (e) {
        throw new FrameError(`frame payload is not JSON: ${(e as Error).message}`);
      }
      if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
        throw new FrameError("frame payload is not a JSON object");
      }
      messages.push(parsed);
    }
  }

  /** Bytes received that do not form a whole frame yet. */
  get pending(): number {
    return this.buffer.length;
  }
}
