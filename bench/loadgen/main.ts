// Load generator entry point: `bun bench/loadgen/main.ts <scenario> --url ws://… [--options]`.
// Runs one scenario and prints its result as one JSON line on stdout (diagnostics on stderr).
//
//   fanout       --clients 32 --room 1 --duration 5 [--db path.db]
//   sparse       --clients 1000 --room-size 5 --interval-ms 200 --duration 10
//   connections  --clients 10000 --concurrency 100
//
// Every scenario also takes --server-pid and --clk-tck to read the server's CPU time and memory
// from /proc at the edges of its measured window. For a cluster, --url and --server-pid (fanout,
// sparse) list the nodes separated by commas: clients connect to them in turn, CPU is summed.
// --watch-comm postgres,redis-server also reports the CPU time of every process of those names.

import { parseOptions } from "./common";
import { connections } from "./connections";
import { fanout } from "./fanout";
import { sparse } from "./sparse";

const scenarios = { fanout, sparse, connections } as const;

async function main(): Promise<number> {
  const [name, ...rest] = Bun.argv.slice(2);
  if (!(name in scenarios)) {
    console.error(`usage: main.ts {${Object.keys(scenarios).join("|")}} --url ws://host:port/ws …`);
    return 2;
  }
  const options = parseOptions(rest);
  const limitS = Number(options.get("time-limit") ?? 300);
  const guard = setTimeout(() => {
    console.error(`load generator: time limit of ${limitS} s reached, exiting`);
    process.exit(3);
  }, limitS * 1000);
  const result = await scenarios[name as keyof typeof scenarios](options);
  clearTimeout(guard);
  console.log(JSON.stringify(result));
  return 0;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(error instanceof Error ? (error.stack ?? error.message) : String(error));
    process.exit(1);
  },
);
