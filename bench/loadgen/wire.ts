// A minimal WebSocket client (RFC 6455) over Bun's raw TCP sockets, built for load generation.
//
// Bun's own WebSocket client dispatches one MessageEvent (and one string) per frame, which
// costs about as much CPU per delivered message as Bun's server spends sending it. Here every
// TCP read is parsed in place and text frames are handed over as byte ranges, so the hot path
// of a scenario reads the few fields it checks straight from the bytes.
//
// Supported: client handshake (checked Sec-WebSocket-Accept), masked text frames out, unmasked
// text frames in, ping -> pong, close handshake, write backpressure (queued until `drain`).
// Not supported (never sent by the servers under test, and reported as a protocol error):
// fragmented messages, extensions, binary frames.

import { createHash, randomBytes } from "node:crypto";

import type { Socket } from "bun";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const HEADER_END = Buffer.from("\r\n\r\n");

/**
 * A complete text frame's payload is buf[start, end). The buffer is only valid during the
 * call: copy what must outlive it.
 */
export type FrameHandler = (buf: Buffer, start: number, end: number) => void;

interface Handlers {
  onText: FrameHandler;
  /** The connection ended: "close <code> <reason>" after a close frame, else why. */
  onClose: (reason: string) => void;
}

interface SocketState {
  ws: RawWebSocket | null;
}

let maskSeed = (Math.random() * 0xffffffff) >>> 0;

/** A cheap non-cryptographic mask key source (xorshift32); masks only need to vary. */
function nextMask(): number {
  maskSeed ^= maskSeed << 13;
  maskSeed ^= maskSeed >>> 17;
  maskSeed ^= maskSeed << 5;
  return maskSeed >>> 0;
}

/** Encode one masked client frame. */
export function clientFrame(opcode: number, payload: Buffer): Buffer {
  const length = payload.length;
  const headerLength = length < 126 ? 6 : length < 65536 ? 8 : 14;
  const out = Buffer.allocUnsafe(headerLength + length);
  out[0] = 0x80 | opcode;
  if (length < 126) {
    out[1] = 0x80 | length;
  } else if (length < 65536) {
    out[1] = 0x80 | 126;
    out.writeUInt16BE(length, 2);
  } else {
    out[1] = 0x80 | 127;
    out.writeBigUInt64BE(BigInt(length), 2);
  }
  const mask = nextMask();
  out.writeUInt32BE(mask, headerLength - 4);
  const m0 = mask >>> 24;
  const m1 = (mask >>> 16) & 0xff;
  const m2 = (mask >>> 8) & 0xff;
  const m3 = mask & 0xff;
  for (let i = 0; i < length; i++) {
    const m = (i & 3) === 0 ? m0 : (i & 3) === 1 ? m1 : (i & 3) === 2 ? m2 : m3;
    out[headerLength + i] = payload[i] ^ m;
  }
  return out;
}

export class RawWebSocket {
  /** TCP reads over all connections (a diagnostic: frames per read shows server batching). */
  static reads = 0;
  closed = false;
  private closeSent = false;
  private socket: Socket<SocketState>;
  private pending: Buffer | null = null;
  private outgoing: Buffer[] = [];
  private handshaking = true;
  private expectedAccept: string;
  private opened: (() => void) | null;
  private failed: ((error: Error) => void) | null;
  private handlers: Handlers;

  private constructor(
    socket: Socket<SocketState>,
    key: string,
    handlers: Handlers,
    opened: () => void,
    failed: (error: Error) => void,
  ) {
    this.socket = socket;
    this.expectedAccept = createHash("sha1")
      .update(key + GUID)
      .digest("base64");
    this.handlers = handlers;
    this.opened = opened;
    this.failed = failed;
  }

  /** Connect, send the upgrade request and resolve once the server answered 101. */
  static async connect(
    host: string,
    port: number,
    path: string,
    handlers: Handlers,
  ): Promise<RawWebSocket> {
    const key = randomBytes(16).toString("base64");
    const state: SocketState = { ws: null };
    const socket = await Bun.connect<SocketState>({
      hostname: host,
      port,
      data: state,
      socket: {
        binaryType: "buffer",
        data(s, chunk) {
          s.data.ws?.receive(chunk);
        },
        drain(s) {
          s.data.ws?.drain();
        },
        close(s, error) {
          s.data.ws?.ended(error ? String(error) : "");
        },
        error(s, error) {
          s.data.ws?.ended(String(error));
        },
      },
    });
    return new Promise<RawWebSocket>((resolve, reject) => {
      const ws: RawWebSocket = new RawWebSocket(socket, key, handlers, () => resolve(ws), reject);
      state.ws = ws;
      ws.write(
        Buffer.from(
          `GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nUpgrade: websocket\r\n` +
            `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\n` +
            "Sec-WebSocket-Version: 13\r\n\r\n",
        ),
      );
    });
  }

  sendText(text: string): void {
    this.write(clientFrame(0x1, Buffer.from(text)));
  }

  close(code = 1000): void {
    if (this.closed || this.closeSent) return;
    this.closeSent = true;
    const payload = Buffer.allocUnsafe(2);
    payload.writeUInt16BE(code, 0);
    this.write(clientFrame(0x8, payload));
  }

  /** Drop the TCP connection without a close handshake. */
  terminate(): void {
    this.socket.terminate();
  }

  private write(data: Buffer): void {
    if (this.closed) return;
    if (this.outgoing.length > 0) {
      this.outgoing.push(data);
      return;
    }
    const written = this.socket.write(data);
    if (written < 0) {
      this.ended("write on a closed socket");
    } else if (written < data.length) {
      this.outgoing.push(data.subarray(written));
    }
  }

  private drain(): void {
    while (this.outgoing.length > 0) {
      const data = this.outgoing[0];
      const written = this.socket.write(data);
      if (written < 0) {
        this.ended("write on a closed socket");
        return;
      }
      if (written < data.length) {
        this.outgoing[0] = data.subarray(written);
        return;
      }
      this.outgoing.shift();
    }
  }

  private ended(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.failed?.(new Error(reason || "connection closed during the handshake"));
    this.failed = null;
    this.opened = null;
    this.handlers.onClose(reason);
  }

  private protocolError(reason: string): void {
    this.ended(`protocol error: ${reason}`);
    this.socket.terminate();
  }

  private receive(chunk: Buffer): void {
    RawWebSocket.reads++;
    let buf = this.pending === null ? chunk : Buffer.concat([this.pending, chunk]);
    this.pending = null;
    let offset = 0;
    if (this.handshaking) {
      const headerEnd = buf.indexOf(HEADER_END);
      if (headerEnd < 0) {
        this.pending = Buffer.from(buf);
        return;
      }
      const head = buf.toString("latin1", 0, headerEnd);
      const accept = /\r\nsec-websocket-accept:\s*(\S+)/i.exec(head)?.[1];
      if (!head.startsWith("HTTP/1.1 101") || accept !== this.expectedAccept) {
        this.protocolError(`upgrade refused: ${head.split("\r\n", 1)[0]}`);
        return;
      }
      this.handshaking = false;
      this.failed = null;
      this.opened?.();
      this.opened = null;
      offset = headerEnd + 4;
    }
    const length = buf.length;
    while (offset + 2 <= length) {
      const b0 = buf[offset];
      const b1 = buf[offset + 1];
      let payloadLength = b1 & 0x7f;
      let header = 2;
      if (payloadLength === 126) {
        if (offset + 4 > length) break;
        payloadLength = buf.readUInt16BE(offset + 2);
        header = 4;
      } else if (payloadLength === 127) {
        if (offset + 10 > length) break;
        payloadLength = Number(buf.readBigUInt64BE(offset + 2));
        header = 10;
      }
      if (b1 & 0x80) header += 4; // servers must not mask, but skip a key if one is there
      const end = offset + header + payloadLength;
      if (end > length) break;
      const opcode = b0 & 0x0f;
      if ((b0 & 0x80) === 0 || opcode === 0 || (b0 & 0x70) !== 0 || b1 & 0x80) {
        this.protocolError(`unsupported frame 0x${b0.toString(16)} 0x${b1.toString(16)}`);
        return;
      }
      if (opcode === 0x1) {
        this.handlers.onText(buf, offset + header, end);
      } else if (opcode === 0x9) {
        this.write(clientFrame(0xa, buf.subarray(offset + header, end)));
      } else if (opcode === 0x8) {
        const code = end - offset - header >= 2 ? buf.readUInt16BE(offset + header) : 1005;
        const text = buf.toString("utf8", Math.min(end, offset + header + 2), end);
        this.close();
        this.socket.end();
        this.ended(`close ${code}${text ? ` ${text}` : ""}`);
        return;
      } else if (opcode !== 0xa) {
        this.protocolError(`unexpected opcode ${opcode}`);
        return;
      }
      offset = end;
      if (this.closed) return;
    }
    // A copy: the read buffer may be reused once this callback returns.
    if (offset < length) this.pending = Buffer.from(buf.subarray(offset));
  }
}
