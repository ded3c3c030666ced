// Fan-out: N clients in one room. In each round every client sends one chat message and the
// round ends when every client has received all N messages of the round (the shape of Bun's
// own chat benchmark). Throughput is deliveries / elapsed seconds.
//
// With --rooms G, G such rooms run their rounds independently at the same time, so the server
// always has work queued while the load generator reads (one room alone alternates: the server
// waits for the round's last delivery to be read before the next round's messages arrive).
//
// Correctness, checked on every delivery: each client receives each message exactly once, in
// the same order as every other client (a rolling hash of the sender sequence), with strictly
// increasing message ids, in the right room, with nothing lost (a round that does not complete
// within --round-timeout-ms is a failure).

import { Database } from "bun:sqlite";

import {
  ChatFields,
  type Client,
  closeAll,
  numberOption,
  type Options,
  openClients,
  readFrame,
  stringOption,
  type WatchedCpu,
  Window,
} from "./common";
import { RawWebSocket } from "./wire";

export interface FanoutResult {
  scenario: "fanout";
  clients: number;
  rooms: number;
  room_id: number;
  warmup_rounds: number;
  rounds: number;
  messages_sent: number;
  deliveries: number;
  expected_deliveries: number;
  elapsed_s: number;
  deliveries_per_s: number;
  messages_per_s: number;
  server_cpu_s: number;
  client_cpu_s: number;
  client_user_s: number;
  client_sys_s: number;
  watched_cpu_s: WatchedCpu[];
  /** Rows added to the server's `messages` table during the measured rounds (with --db). */
  committed: number | null;
  committed_per_s: number | null;
  /** TCP reads by the load generator in the measured window. */
  reads: number;
  duplicates: number;
  out_of_order_ids: number;
  order_mismatches: number;
  unexpected: number;
  missing: number;
  errors: number;
  last_error: string;
  ok: boolean;
  failure: string;
}

/** One room of n clients and the checks on what each of them receives. */
class Room {
  round = -1;
  rounds = 0;
  deliveries = 0;
  duplicates = 0;
  outOfOrder = 0;
  unexpected = 0;
  errors = 0;
  lastError = "";
  failure = "";
  private pending = 0;
  private done: (() => void) | null = null;
  private readonly lastId: Float64Array;
  /** A rolling hash of the senders in arrival order, per client: equal iff same order. */
  private readonly hash: Uint32Array;
  private readonly received: Uint32Array;
  /** seen[i * n + s] = round + 1 once client i got sender s's message of that round. */
  private readonly seen: Uint32Array;
  private readonly fields = new ChatFields();

  constructor(
    readonly roomId: number,
    readonly clients: Client[],
    private readonly roundTimeoutMs: number,
  ) {
    const n = clients.length;
    this.lastId = new Float64Array(n);
    this.hash = new Uint32Array(n).fill(2166136261);
    this.received = new Uint32Array(n);
    this.seen = new Uint32Array(n * n);
    clients.forEach((client, i) => {
      client.onFrame = (buf, start, end) => this.receive(i, buf, start, end);
    });
  }

  private receive(i: number, buf: Buffer, start: number, end: number): void {
    const fields = this.fields;
    const type = readFrame(buf, start, end, fields);
    if (type !== "chat") {
      if (type === "error") {
        this.errors++;
        this.lastError = JSON.stringify(fields.error);
      }
      return;
    }
    this.deliveries++;
    const n = this.clients.length;
    // content: f:<round>:<sender>
    const round = fields.intAt(2);
    const sender = fields.intAt(fields.indexOf(":", 2) + 1);
    if (
      fields.roomId !== this.roomId ||
      !(sender >= 0 && sender < n) ||
      !(round >= 0 && round <= this.round)
    ) {
      this.unexpected++;
      return;
    }
    if (!(fields.id > this.lastId[i])) this.outOfOrder++;
    this.lastId[i] = fields.id;
    this.hash[i] = Math.imul(this.hash[i] ^ (sender + 1), 16777619);
    const slot = i * n + sender;
    if (round < this.round || this.seen[slot] === round + 1) {
      this.duplicates++;
      return;
    }
    this.seen[slot] = round + 1;
    if (++this.received[i] === n && --this.pending === 0) this.done?.();
  }

  /** Every client sends one message; true once every client received all of them. */
  runRound(): Promise<boolean> {
    const n = this.clients.length;
    this.round++;
    this.pending = n;
    this.received.fill(0);
    const round = this.round;
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        this.done = null;
        resolve(false);
      }, this.roundTimeoutMs);
      this.done = () => {
        clearTimeout(timer);
        this.done = null;
        resolve(true);
      };
      for (let i = 0; i < n; i++) {
        this.clients[i].send("chat", {
          room_id: this.roomId,
          content: `f:${round}:${i}`,
          type: "text",
        });
      }
    });
  }

  async warmUp(rounds: number): Promise<void> {
    for (let r = 0; r < rounds && this.failure === ""; r++) {
      if (!(await this.runRound())) this.failure = `room ${this.roomId}: warm-up round ${r} failed`;
    }
  }

  /** Rounds until `until` (performance.now() ms) or maxRounds, counting complete ones. */
  async measure(until: number, maxRounds: number): Promise<void> {
    while (this.failure === "" && this.rounds < maxRounds && performance.now() < until) {
      if (await this.runRound()) {
        this.rounds++;
      } else {
        this.failure = `room ${this.roomId}: round ${this.round} did not complete in time`;
      }
    }
  }

  missing(): number {
    const n = this.clients.length;
    return this.failure === "" ? 0 : this.received.reduce((sum, r) => sum + (n - r), 0);
  }

  orderMismatches(): number {
    return this.hash.reduce((count, h) => count + (h === this.hash[0] ? 0 : 1), 0);
  }
}

function sum(rooms: Room[], value: (room: Room) => number): number {
  return rooms.reduce((total, room) => total + value(room), 0);
}

export async function fanout(options: Options): Promise<FanoutResult> {
  const url = stringOption(options, "url");
  const n = numberOption(options, "clients", 32);
  const roomCount = numberOption(options, "rooms", 1);
  const firstRoom = numberOption(options, "room", 1);
  const durationMs = numberOption(options, "duration", 5) * 1000;
  const maxRounds = numberOption(options, "max-rounds", 1_000_000);
  const warmupRounds = numberOption(options, "warmup-rounds", 2);
  const roundTimeoutMs = numberOption(options, "round-timeout-ms", 20_000);
  const prefix = stringOption(options, "prefix", `fan${firstRoom}`);
  const dbPath = options.get("db");
  const database = dbPath === undefined ? null : new Database(dbPath);
  const countRows = (): number =>
    database === null
      ? 0
      : (database.query("SELECT count(*) AS n FROM messages").get() as { n: number }).n;

  const clients = await openClients(url, n * roomCount, (i) => `${prefix}-u${i}`);
  const rooms = Array.from(
    { length: roomCount },
    (_, g) => new Room(firstRoom + g, clients.slice(g * n, (g + 1) * n), roundTimeoutMs),
  );
  await Promise.all(rooms.flatMap((room) => room.clients.map((c) => c.join(room.roomId))));
  await Promise.all(clients.map((c) => c.barrier()));

  await Promise.all(rooms.map((room) => room.warmUp(warmupRounds)));
  const deliveriesBefore = sum(rooms, (room) => room.deliveries);
  const readsBefore = RawWebSocket.reads;
  const rowsBefore = countRows();
  const window = new Window(options);
  const until = performance.now() + durationMs;
  await Promise.all(rooms.map((room) => room.measure(until, maxRounds)));
  const measured = window.finish();
  const reads = RawWebSocket.reads - readsBefore;
  const committed = database === null ? null : countRows() - rowsBefore;
  database?.close();

  const rounds = sum(rooms, (room) => room.rounds);
  const deliveries = sum(rooms, (room) => room.deliveries) - deliveriesBefore;
  const duplicates = sum(rooms, (room) => room.duplicates);
  const outOfOrder = sum(rooms, (room) => room.outOfOrder);
  const orderMismatches = sum(rooms, (room) => room.orderMismatches());
  const unexpected = sum(rooms, (room) => room.unexpected);
  const errors = sum(rooms, (room) => room.errors) + clients.reduce((t, c) => t + c.errors, 0);
  const failure = rooms.map((room) => room.failure).find((f) => f !== "") ?? "";
  const lastError =
    rooms.map((room) => room.lastError).find((e) => e !== "") ??
    clients.find((c) => c.lastError)?.lastError ??
    "";
  await closeAll(clients);

  const ok =
    failure === "" &&
    duplicates === 0 &&
    outOfOrder === 0 &&
    orderMismatches === 0 &&
    unexpected === 0 &&
    errors === 0 &&
    deliveries === rounds * n * n &&
    (committed === null || committed === rounds * n);
  return {
    scenario: "fanout",
    clients: n,
    rooms: roomCount,
    room_id: firstRoom,
    warmup_rounds: warmupRounds,
    rounds,
    messages_sent: rounds * n,
    deliveries,
    expected_deliveries: rounds * n * n,
    elapsed_s: measured.elapsed_s,
    deliveries_per_s: deliveries / measured.elapsed_s,
    messages_per_s: (rounds * n) / measured.elapsed_s,
    server_cpu_s: measured.server_cpu_s,
    client_cpu_s: measured.client_cpu_s,
    client_user_s: measured.client_user_s,
    client_sys_s: measured.client_sys_s,
    watched_cpu_s: measured.watched_cpu_s,
    committed,
    committed_per_s: committed === null ? null : committed / measured.elapsed_s,
    reads,
    duplicates,
    out_of_order_ids: outOfOrder,
    order_mismatches: orderMismatches,
    unexpected,
    missing: sum(rooms, (room) => room.missing()),
    errors,
    last_error: lastError,
    ok,
    failure: failure || (ok ? "" : "correctness check failed"),
  };
}
