// Shared pieces of the load generator: options, WebSocket clients speaking roomcast's
// envelope protocol, /proc readings of the server under test, and statistics.

import { readdirSync, readFileSync } from "node:fs";

import { type FrameHandler, RawWebSocket } from "./wire";

export type Options = Map<string, string>;

/** `--key value` pairs after the scenario name. */
export function parseOptions(argv: string[]): Options {
  const options: Options = new Map();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith("--")) throw new Error(`unexpected argument ${arg}`);
    const value = argv[i + 1];
    if (value === undefined || value.startsWith("--")) {
      options.set(arg.slice(2), "true");
    } else {
      options.set(arg.slice(2), value);
      i++;
    }
  }
  return options;
}

export function stringOption(options: Options, name: string, fallback?: string): string {
  const value = options.get(name) ?? fallback;
  if (value === undefined) throw new Error(`--${name} is required`);
  return value;
}

export function numberOption(options: Options, name: string, fallback: number): number {
  const raw = options.get(name);
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value)) throw new Error(`--${name}: not a number: ${raw}`);
  return value;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Race a promise against a deadline; the error names what was being waited for. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Run `task(i)` for i in [0, count) with at most `concurrency` in flight. */
export async function pool(
  count: number,
  concurrency: number,
  task: (index: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      const index = next++;
      await task(index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
}

export interface Envelope {
  type: string;
  payload: Record<string, unknown>;
  timestamp?: number;
}

export function frame(type: string, payload: Record<string, unknown>): string {
  return JSON.stringify({ type, payload, timestamp: Date.now() });
}

type Waiter = {
  type: string;
  resolve: (message: Envelope) => void;
  reject: (error: Error) => void;
};

/** ws://host:port/path, split for the raw client. */
export function parseUrl(url: string): { host: string; port: number; path: string } {
  const parsed = new URL(url);
  if (parsed.protocol !== "ws:") throw new Error(`only ws:// URLs are supported: ${url}`);
  return { host: parsed.hostname, port: Number(parsed.port || 80), path: parsed.pathname };
}

/**
 * One connection speaking roomcast's envelope protocol. Setup waits for frames by type with
 * `next(type)` (parsed with JSON.parse); every frame no waiter took goes to `onFrame` as bytes,
 * so a scenario's hot path reads only what it checks (see `readFrame`).
 */
export class Client {
  connectionId = "";
  onFrame: FrameHandler | null = null;
  errors = 0;
  lastError = "";
  closed = false;
  closeReason = "";
  private ws: RawWebSocket | null = null;
  private waiters: Waiter[] = [];

  private handle(buf: Buffer, start: number, end: number): void {
    if (this.waiters.length > 0) {
      const message = JSON.parse(buf.toString("utf8", start, end)) as Envelope;
      const index = this.waiters.findIndex((w) => w.type === message.type);
      if (index >= 0) {
        const [waiter] = this.waiters.splice(index, 1);
        waiter.resolve(message);
        return;
      }
      if (message.type === "error") this.noteError(message.payload);
    }
    this.onFrame?.(buf, start, end);
  }

  noteError(payload: unknown): void {
    this.errors++;
    this.lastError = JSON.stringify(payload);
  }

  /** Open a connection and wait for its `connected` frame. */
  static async open(url: string, userId: string): Promise<Client> {
    const { host, port, path } = parseUrl(url);
    const client = new Client();
    const connected = client.next("connected");
    client.ws = await RawWebSocket.connect(
      host,
      port,
      `${path}?user_id=${encodeURIComponent(userId)}`,
      {
        onText: (buf, start, end) => client.handle(buf, start, end),
        onClose: (reason) => client.ended(reason),
      },
    );
    const message = await connected;
    client.connectionId = String(message.payload.connection_id);
    return client;
  }

  private ended(reason: string): void {
    this.closed = true;
    this.closeReason = reason;
    const why = `connection closed (${reason || "no close frame"})`;
    const error = new Error(this.lastError ? `${why} after error ${this.lastError}` : why);
    for (const waiter of this.waiters.splice(0)) waiter.reject(error);
  }

  /** The next frame of `type`; rejected if the connection closes first. */
  next(type: string): Promise<Envelope> {
    if (this.closed) return Promise.reject(new Error(`connection closed (${this.closeReason})`));
    return new Promise((resolve, reject) => this.waiters.push({ type, resolve, reject }));
  }

  send(type: string, payload: Record<string, unknown>): void {
    this.ws?.sendText(frame(type, payload));
  }

  async join(roomId: number): Promise<void> {
    const answer = this.next("room_users");
    this.send("join_room", { room_id: roomId });
    await answer;
  }

  /** ping/pong: every frame the server queued for us before the ping has arrived. */
  async barrier(): Promise<void> {
    const answer = this.next("pong");
    this.send("ping", {});
    await answer;
  }

  close(): void {
    this.ws?.close();
  }
}

/** What `readFrame` found in a `chat` frame. */
export class ChatFields {
  id = 0;
  roomId = 0;
  /** The `error` payload, for error frames. */
  error: unknown = null;
  /** The content is either bytes buf[contentStart, contentEnd) or, when buf is null, text. */
  buf: Buffer | null = null;
  contentStart = 0;
  contentEnd = 0;
  text = "";

  /** The content as a string. */
  content(): string {
    return this.buf === null
      ? this.text
      : this.buf.toString("latin1", this.contentStart, this.contentEnd);
  }

  /** The decimal integer starting `at` bytes into the content, or NaN. */
  intAt(at: number): number {
    if (this.buf === null) return digitsOf(this.text, at);
    return digits(this.buf, this.contentStart + at, this.contentEnd);
  }

  /** Index in the content of the first `char` at or after `from`, or -1. */
  indexOf(char: string, from: number): number {
    if (this.buf === null) return this.text.indexOf(char, from);
    const code = char.charCodeAt(0);
    for (let i = this.contentStart + from; i < this.contentEnd; i++) {
      if (this.buf[i] === code) return i - this.contentStart;
    }
    return -1;
  }
}

function digitsOf(text: string, at: number): number {
  let end = at;
  while (end < text.length && text.charCodeAt(end) >= 0x30 && text.charCodeAt(end) <= 0x39) end++;
  return end === at ? Number.NaN : Number(text.slice(at, end));
}

const CHAT_PREFIX = Buffer.from('{"type":"chat","payload":{');
const ID_KEY = Buffer.from('"id":');
const ROOM_KEY = Buffer.from('"room_id":');
const CONTENT_KEY = Buffer.from('"content":"');
const QUOTE = 0x22;
const BACKSLASH = 0x5c;

function startsWith(buf: Buffer, at: number, prefix: Buffer): boolean {
  for (let i = 0; i < prefix.length; i++) if (buf[at + i] !== prefix[i]) return false;
  return true;
}

/**
 * Index just past the first `key` in buf[from, end), or -1. A plain loop: for frames of a few
 * hundred bytes it is several times cheaper than crossing into native Buffer.indexOf.
 */
function after(buf: Buffer, key: Buffer, from: number, end: number): number {
  const first = key[0];
  const last = end - key.length;
  for (let i = from; i <= last; i++) {
    if (buf[i] === first && startsWith(buf, i, key)) return i + key.length;
  }
  return -1;
}

function digits(buf: Buffer, at: number, end: number): number {
  if (at < 0) return Number.NaN;
  let value = 0;
  let i = at;
  for (; i < end; i++) {
    const c = buf[i];
    if (c < 0x30 || c > 0x39) break;
    value = value * 10 + c - 0x30;
  }
  return i === at ? Number.NaN : value;
}

/**
 * The type of a frame; for `chat` frames, `out` is filled with id, room id and content.
 *
 * Fast path: a frame that starts `{"type":"chat","payload":{` (both servers order their keys
 * that way) with plain ASCII content is read in place. Anything else goes through JSON.parse,
 * so a server with another key order or escaped content is still checked correctly, only more
 * slowly.
 */
export function readFrame(buf: Buffer, start: number, end: number, out: ChatFields): string {
  if (startsWith(buf, start, CHAT_PREFIX)) {
    const body = start + CHAT_PREFIX.length;
    const from = after(buf, CONTENT_KEY, body, end);
    let to = from;
    if (from > 0) {
      for (; to < end; to++) {
        const c = buf[to];
        if (c === QUOTE || c === BACKSLASH || c >= 0x80) break;
      }
    }
    if (from > 0 && to < end && buf[to] === QUOTE) {
      out.id = digits(buf, after(buf, ID_KEY, body, end), end);
      out.roomId = digits(buf, after(buf, ROOM_KEY, body, end), end);
      out.buf = buf;
      out.contentStart = from;
      out.contentEnd = to;
      return "chat";
    }
  }
  const message = JSON.parse(buf.toString("utf8", start, end)) as Envelope;
  if (message.type === "chat") {
    const payload = message.payload;
    out.id = typeof payload.id === "number" ? payload.id : Number.NaN;
    out.roomId = typeof payload.room_id === "number" ? payload.room_id : Number.NaN;
    out.buf = null;
    out.text = typeof payload.content === "string" ? payload.content : "";
  } else if (message.type === "error") {
    out.error = message.payload;
  }
  return message.type;
}

/**
 * Open `count` clients (user ids from `userId(i)`), `concurrency` handshakes at a time. `url` may
 * list several servers separated by commas (the nodes of a cluster): client i connects to the
 * (i mod count)-th, so a room of consecutive clients is spread over all of them.
 */
export async function openClients(
  url: string,
  count: number,
  userId: (index: number) => string,
  concurrency = 64,
): Promise<Client[]> {
  const urls = url.split(",");
  const clients: Client[] = new Array(count);
  await pool(count, concurrency, async (i) => {
    const target = urls[i % urls.length];
    clients[i] = await within(Client.open(target, userId(i)), 30_000, `connect ${userId(i)}`);
  });
  return clients;
}

export async function closeAll(clients: Client[], timeoutMs = 10_000): Promise<void> {
  for (const client of clients) client?.close();
  const deadline = performance.now() + timeoutMs;
  while (clients.some((c) => c && !c.closed) && performance.now() < deadline) await sleep(20);
}

// -- measurements of the server process -------------------------------------------------------

/** utime + stime of a process, in seconds, from /proc/<pid>/stat. */
export function cpuSeconds(pid: number, clkTck: number): number {
  if (pid <= 0) return 0;
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name (which may contain spaces) start at state (field 3).
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / clkTck;
}

/** CPU seconds of every process whose command name is in `comms`, by pid (e.g. "postgres"). */
export function cpuByComm(comms: string[], clkTck: number): Map<number, [string, number]> {
  const found = new Map<number, [string, number]>();
  if (comms.length === 0) return found;
  for (const name of readdirSync("/proc")) {
    const pid = Number(name);
    if (!Number.isInteger(pid)) continue;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      if (comms.includes(comm)) found.set(pid, [comm, cpuSeconds(pid, clkTck)]);
    } catch {
      // The process ended while /proc was being read.
    }
  }
  return found;
}

/** VmRSS of a process in bytes, from /proc/<pid>/status. */
export function rssBytes(pid: number): number {
  if (pid <= 0) return 0;
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return match ? Number(match[1]) * 1024 : 0;
}

/** CPU seconds (user, system) this load generator has used. */
export function ownCpu(): { user: number; system: number } {
  const usage = process.cpuUsage();
  return { user: usage.user / 1e6, system: usage.system / 1e6 };
}

/** CPU seconds a watched process used in the window (see `--watch-comm`). */
export interface WatchedCpu {
  pid: number;
  comm: string;
  cpu_s: number;
}

export interface Measured {
  elapsed_s: number;
  server_cpu_s: number;
  client_cpu_s: number;
  client_user_s: number;
  client_sys_s: number;
  /** Processes alive at both ends of the window that used CPU in it. */
  watched_cpu_s: WatchedCpu[];
}

/**
 * Readings taken at both ends of a measured window. `--server-pid` may list several pids (the
 * nodes of a cluster): their CPU time is summed. `--watch-comm postgres,redis-server` also
 * reads every process of those names, each reported on its own.
 */
export class Window {
  private readonly start = performance.now();
  private readonly pids: number[];
  private readonly clkTck: number;
  private readonly comms: string[];
  private readonly serverStart: number;
  private readonly watchedStart: Map<number, [string, number]>;
  private readonly clientStart = ownCpu();

  constructor(options: Options) {
    this.pids = stringOption(options, "server-pid", "0").split(",").map(Number);
    this.clkTck = numberOption(options, "clk-tck", 100);
    this.comms = (options.get("watch-comm") ?? "").split(",").filter((c) => c !== "");
    this.serverStart = this.serverCpu();
    this.watchedStart = cpuByComm(this.comms, this.clkTck);
  }

  private serverCpu(): number {
    return this.pids.reduce((sum, pid) => sum + cpuSeconds(pid, this.clkTck), 0);
  }

  finish(): Measured {
    const client = ownCpu();
    const user = client.user - this.clientStart.user;
    const system = client.system - this.clientStart.system;
    const serverCpu = this.serverCpu() - this.serverStart;
    const watched: WatchedCpu[] = [];
    for (const [pid, [comm, cpu]] of cpuByComm(this.comms, this.clkTck)) {
      const before = this.watchedStart.get(pid);
      const used = cpu - (before?.[1] ?? 0);
      if (used > 0) watched.push({ pid, comm, cpu_s: used });
    }
    return {
      elapsed_s: (performance.now() - this.start) / 1000,
      server_cpu_s: serverCpu,
      client_cpu_s: user + system,
      client_user_s: user,
      client_sys_s: system,
      watched_cpu_s: watched,
    };
  }
}

export function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index];
}

/** Deterministic pseudo-random numbers (mulberry32), so runs are repeatable. */
export function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
