// Sparse: many small rooms (default 1,000 connections in 200 rooms of 5). Every client sends a
// message every --interval-ms at its own random phase; the sender puts its send time in the
// content and every other member computes now - sent on arrival (one process, one monotonic
// clock). Reports end-to-end latency percentiles and checks that every member, sender
// included, got every message exactly once.

import {
  ChatFields,
  closeAll,
  numberOption,
  type Options,
  openClients,
  percentile,
  random,
  readFrame,
  sleep,
  stringOption,
  type WatchedCpu,
  Window,
} from "./common";

export interface SparseResult {
  scenario: "sparse";
  clients: number;
  room_size: number;
  rooms: number;
  interval_ms: number;
  elapsed_s: number;
  messages_sent: number;
  deliveries: number;
  expected_deliveries: number;
  deliveries_per_s: number;
  server_cpu_s: number;
  client_cpu_s: number;
  client_user_s: number;
  client_sys_s: number;
  watched_cpu_s: WatchedCpu[];
  latency_ms: { p50: number; p90: number; p99: number; max: number; samples: number };
  duplicates: number;
  unexpected: number;
  missing: number;
  errors: number;
  last_error: string;
  ok: boolean;
  failure: string;
}

export async function sparse(options: Options): Promise<SparseResult> {
  const url = stringOption(options, "url");
  const n = numberOption(options, "clients", 1000);
  const roomSize = numberOption(options, "room-size", 5);
  const firstRoom = numberOption(options, "room", 1);
  const intervalMs = numberOption(options, "interval-ms", 200);
  const durationMs = numberOption(options, "duration", 10) * 1000;
  const drainMs = numberOption(options, "drain-ms", 5000);
  const prefix = stringOption(options, "prefix", `sp${firstRoom}`);
  const rooms = Math.ceil(n / roomSize);
  const roomOf = (i: number): number => firstRoom + Math.floor(i / roomSize);
  const membersOf = (i: number): number => {
    const first = Math.floor(i / roomSize) * roomSize;
    return Math.min(n, first + roomSize) - first;
  };

  const clients = await openClients(url, n, (i) => `${prefix}-u${i}`);
  await Promise.all(clients.map((c, i) => c.join(roomOf(i))));
  await Promise.all(clients.map((c) => c.barrier()));

  const perClient = Math.ceil(durationMs / intervalMs) + 1;
  const latencies = new Float64Array(n * perClient * roomSize);
  // received[i * perClient + seq] counts deliveries of sender i's message seq.
  const received = new Uint16Array(n * perClient);
  const sent = new Uint32Array(n);
  let samples = 0;
  let deliveries = 0;
  let duplicates = 0;
  let unexpected = 0;
  let errors = 0;
  let lastError = "";

  const fields = new ChatFields();
  clients.forEach((client, i) => {
    client.onFrame = (buf, start, end) => {
      const now = performance.now();
      const type = readFrame(buf, start, end, fields);
      if (type !== "chat") {
        if (type === "error") {
          errors++;
          lastError = JSON.stringify(fields.error);
        }
        return;
      }
      deliveries++;
      const [, senderText, seqText, sentText] = fields.content().split(":");
      const sender = Number(senderText);
      const seq = Number(seqText);
      if (
        fields.roomId !== roomOf(i) ||
        !(sender >= 0 && sender < n) ||
        roomOf(sender) !== roomOf(i) ||
        !(seq >= 0 && seq < sent[sender])
      ) {
        unexpected++;
        return;
      }
      const slot = sender * perClient + seq;
      if (++received[slot] > membersOf(sender)) duplicates++;
      if (sender !== i) latencies[samples++] = now - Number(sentText);
    };
  });

  const pick = random(firstRoom * 7919 + n);
  const phases: ReturnType<typeof setTimeout>[] = [];
  const intervals: ReturnType<typeof setInterval>[] = [];
  let stopped = false;
  const started = performance.now();
  const window = new Window(options);
  const sendOne = (i: number): void => {
    if (performance.now() - started >= durationMs || sent[i] >= perClient) return;
    const seq = sent[i]++;
    clients[i].send("chat", {
      room_id: roomOf(i),
      content: `s:${i}:${seq}:${performance.now()}`,
      type: "text",
    });
  };
  for (let i = 0; i < n; i++) {
    const phase = pick() * intervalMs;
    phases.push(
      setTimeout(() => {
        if (stopped) return;
        sendOne(i);
        intervals.push(setInterval(() => sendOne(i), intervalMs));
      }, phase),
    );
  }
  await sleep(durationMs);
  stopped = true;
  for (const timer of phases) clearTimeout(timer);
  for (const timer of intervals) clearInterval(timer);

  const expected = (): number => {
    let total = 0;
    for (let i = 0; i < n; i++) total += sent[i] * membersOf(i);
    return total;
  };
  const drainUntil = performance.now() + drainMs;
  while (deliveries - duplicates < expected() && performance.now() < drainUntil) await sleep(10);
  const measured = window.finish();
  const messagesSent = sent.reduce((a, b) => a + b, 0);
  const expectedDeliveries = expected();
  const missing = Math.max(0, expectedDeliveries - (deliveries - duplicates - unexpected));
  const connectionErrors = clients.reduce((sum, c) => sum + c.errors, 0);
  await closeAll(clients);

  const sorted = latencies.subarray(0, samples).sort();
  const ok =
    duplicates === 0 && unexpected === 0 && missing === 0 && errors + connectionErrors === 0;
  return {
    scenario: "sparse",
    clients: n,
    room_size: roomSize,
    rooms,
    interval_ms: intervalMs,
    elapsed_s: measured.elapsed_s,
    messages_sent: messagesSent,
    deliveries,
    expected_deliveries: expectedDeliveries,
    deliveries_per_s: deliveries / measured.elapsed_s,
    server_cpu_s: measured.server_cpu_s,
    client_cpu_s: measured.client_cpu_s,
    client_user_s: measured.client_user_s,
    client_sys_s: measured.client_sys_s,
    watched_cpu_s: measured.watched_cpu_s,
    latency_ms: {
      p50: percentile(sorted, 50),
      p90: percentile(sorted, 90),
      p99: percentile(sorted, 99),
      max: samples > 0 ? sorted[samples - 1] : Number.NaN,
      samples,
    },
    duplicates,
    unexpected,
    missing,
    errors: errors + connectionErrors,
    last_error: lastError || clients.find((c) => c.lastError)?.lastError || "",
    ok,
    failure: ok ? "" : "correctness check failed",
  };
}
