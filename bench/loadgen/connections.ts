// Connections: open --clients idle WebSocket connections (--concurrency handshakes in flight),
// each counted once its `connected` frame arrived. Reports the connect rate and the server's
// resident memory per connection (VmRSS after all are open and a settle pause, minus VmRSS
// before, divided by the number open).

import {
  Client,
  closeAll,
  cpuSeconds,
  numberOption,
  type Options,
  pool,
  rssBytes,
  sleep,
  stringOption,
  within,
} from "./common";

export interface ConnectionsResult {
  scenario: "connections";
  clients: number;
  opened: number;
  failed: number;
  first_failure: string;
  connect_s: number;
  connects_per_s: number;
  server_cpu_s: number;
  rss_before_bytes: number;
  rss_after_bytes: number;
  rss_per_connection_bytes: number;
  still_open: number;
  ok: boolean;
  failure: string;
}

export async function connections(options: Options): Promise<ConnectionsResult> {
  const url = stringOption(options, "url");
  const n = numberOption(options, "clients", 10_000);
  const concurrency = numberOption(options, "concurrency", 100);
  const settleMs = numberOption(options, "settle-ms", 1000);
  const prefix = stringOption(options, "prefix", "conn");
  const pid = numberOption(options, "server-pid", 0);
  const clkTck = numberOption(options, "clk-tck", 100);

  const rssBefore = rssBytes(pid);
  const cpuBefore = cpuSeconds(pid, clkTck);
  const clients: Client[] = [];
  let failed = 0;
  let firstFailure = "";
  const started = performance.now();
  await pool(n, concurrency, async (i) => {
    try {
      clients.push(await within(Client.open(url, `${prefix}-u${i}`), 30_000, `connect ${i}`));
    } catch (error) {
      failed++;
      if (firstFailure === "") firstFailure = String(error);
    }
  });
  const connectS = (performance.now() - started) / 1000;
  const serverCpu = cpuSeconds(pid, clkTck) - cpuBefore;
  await sleep(settleMs);
  const rssAfter = rssBytes(pid);
  const stillOpen = clients.filter((c) => !c.closed).length;
  await closeAll(clients, 20_000);

  const ok = failed === 0 && stillOpen === n;
  return {
    scenario: "connections",
    clients: n,
    opened: clients.length,
    failed,
    first_failure: firstFailure,
    connect_s: connectS,
    connects_per_s: clients.length / connectS,
    server_cpu_s: serverCpu,
    rss_before_bytes: rssBefore,
    rss_after_bytes: rssAfter,
    rss_per_connection_bytes: clients.length > 0 ? (rssAfter - rssBefore) / clients.length : 0,
    still_open: stillOpen,
    ok,
    failure: ok ? "" : `${failed} failed, ${clients.length - stillOpen} closed before the end`,
  };
}
