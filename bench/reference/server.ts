// A small reference chat server in Bun, speaking the subset of roomcast's protocol that the
// benchmark uses: `connected`, `join_room` / `room_users` / `user_joined`, `leave_room` /
// `user_left`, `chat`, `ping` / `pong` and `error`. No database: message ids come from a
// per-process counter. Fan-out is Bun's uWebSockets pub/sub (`server.publish`), which encodes
// a message once and writes it to every subscriber.
//
//   bun bench/reference/server.ts --port 3100 [--host 127.0.0.1]

import type { Server, ServerWebSocket } from "bun";

interface Conn {
  connectionId: string;
  userId: string;
  rooms: Set<number>;
}

type Json = Record<string, unknown>;

const MAX_CONTENT_CHARS = 4000;
const MAX_MESSAGE_BYTES = 65536;
const MAX_SEND_BUFFER = 4 * 1024 * 1024;
const USER_ID = /^[^\x00-\x1f\x7f]{1,64}$/;

function option(name: string, fallback: string): string {
  const index = Bun.argv.indexOf(`--${name}`);
  return index >= 0 && index + 1 < Bun.argv.length ? Bun.argv[index + 1] : fallback;
}

const port = Number(option("port", "3100"));
const hostname = option("host", "127.0.0.1");

/** room id -> user id -> number of that user's connections in the room. */
const rooms = new Map<number, Map<string, number>>();
let nextMessageId = 1;
let nextConnection = 1;

function frame(type: string, payload: Json): string {
  return JSON.stringify({ type, payload, timestamp: Date.now() });
}

function topic(roomId: number): string {
  return `room:${roomId}`;
}

function isId(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 1;
}

class Refusal extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

function roomIdOf(payload: Json, required: boolean): number | null {
  const roomId = payload.room_id;
  if (roomId === undefined && !required) return null;
  if (!isId(roomId))
    throw new Refusal("invalid_message", "payload.room_id: expected a positive int");
  return roomId;
}

function join(ws: ServerWebSocket<Conn>, server: Server<Conn>, roomId: number): void {
  const conn = ws.data;
  let members = rooms.get(roomId);
  if (members === undefined) {
    members = new Map();
    rooms.set(roomId, members);
  }
  if (!conn.rooms.has(roomId)) {
    conn.rooms.add(roomId);
    const count = members.get(conn.userId) ?? 0;
    members.set(conn.userId, count + 1);
    if (count === 0) {
      // Published before this socket subscribes: the joiner gets `room_users` instead.
      server.publish(
        topic(roomId),
        frame("user_joined", { room_id: roomId, user_id: conn.userId }),
      );
    }
    ws.subscribe(topic(roomId));
  }
  const users = [...members.keys()].sort().map((user_id) => ({ user_id, status: "online" }));
  ws.send(frame("room_users", { room_id: roomId, users }));
}

function leave(
  ws: ServerWebSocket<Conn> | null,
  conn: Conn,
  server: Server<Conn>,
  roomId: number,
): void {
  conn.rooms.delete(roomId);
  ws?.unsubscribe(topic(roomId));
  const members = rooms.get(roomId);
  if (members === undefined) return;
  const count = (members.get(conn.userId) ?? 1) - 1;
  if (count > 0) {
    members.set(conn.userId, count);
    return;
  }
  members.delete(conn.userId);
  if (members.size === 0) rooms.delete(roomId);
  server.publish(topic(roomId), frame("user_left", { room_id: roomId, user_id: conn.userId }));
}

function chat(ws: ServerWebSocket<Conn>, server: Server<Conn>, payload: Json): void {
  const conn = ws.data;
  const roomId = roomIdOf(payload, true) as number;
  const content = payload.content;
  if (typeof content !== "string") {
    throw new Refusal("invalid_message", "payload.content: expected a string");
  }
  if (content.trim() === "") {
    throw new Refusal("invalid_message", "payload.content: must not be empty");
  }
  // UTF-16 code units, not code points as in roomcast: the same for the ASCII benchmark content.
  if (content.length > MAX_CONTENT_CHARS) {
    throw new Refusal("too_large", `payload.content: longer than ${MAX_CONTENT_CHARS} characters`);
  }
  if (payload.type !== undefined && payload.type !== "text") {
    throw new Refusal("invalid_message", 'payload.type: expected "text"');
  }
  if (!conn.rooms.has(roomId)) {
    throw new Refusal("forbidden", `not a member of room ${roomId}`);
  }
  const message = {
    id: nextMessageId++,
    room_id: roomId,
    user_id: conn.userId,
    content,
    type: "text",
    created_at: Date.now(),
  };
  server.publish(topic(roomId), frame("chat", message));
}

function handle(ws: ServerWebSocket<Conn>, server: Server<Conn>, text: string): void {
  let type: string | undefined;
  try {
    let message: unknown;
    try {
      message = JSON.parse(text);
    } catch {
      throw new Refusal("invalid_json", "the frame is not JSON");
    }
    if (typeof message !== "object" || message === null || Array.isArray(message)) {
      throw new Refusal("invalid_message", "expected an object");
    }
    const envelope = message as Json;
    if (typeof envelope.type !== "string") {
      throw new Refusal("invalid_message", "type: expected a string");
    }
    type = envelope.type;
    const raw = envelope.payload ?? {};
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
      throw new Refusal("invalid_message", "payload: expected an object");
    }
    const payload = raw as Json;
    for (const key of ["user_id", "from_user_id"]) {
      if (payload[key] !== undefined && payload[key] !== ws.data.userId) {
        throw new Refusal("forbidden", `this connection belongs to user ${ws.data.userId}`);
      }
    }
    switch (type) {
      case "chat":
        chat(ws, server, payload);
        break;
      case "ping":
        ws.send(frame("pong", {}));
        break;
      case "join_room":
        join(ws, server, roomIdOf(payload, true) as number);
        break;
      case "leave_room": {
        const roomId = roomIdOf(payload, false);
        if (roomId !== null && !ws.data.rooms.has(roomId)) {
          throw new Refusal("not_found", `not in room ${roomId}`);
        }
        for (const id of roomId === null ? [...ws.data.rooms] : [roomId]) {
          leave(ws, ws.data, server, id);
        }
        break;
      }
      default:
        throw new Refusal("unknown_type", `unknown message type ${JSON.stringify(type)}`);
    }
  } catch (error) {
    const refusal =
      error instanceof Refusal ? error : new Refusal("internal", "internal server error");
    ws.send(frame("error", { code: refusal.code, message: refusal.message, type }));
  }
}

const server: Server<Conn> = Bun.serve<Conn>({
  port,
  hostname,
  fetch(request, srv) {
    const url = new URL(request.url);
    if (url.pathname === "/health") return Response.json({ status: "ok" });
    if (url.pathname !== "/ws") return new Response("not found", { status: 404 });
    const userId = url.searchParams.get("user_id");
    if (userId === null || !USER_ID.test(userId)) {
      return new Response("user_id required", { status: 400 });
    }
    const data: Conn = { connectionId: String(nextConnection++), userId, rooms: new Set() };
    if (srv.upgrade(request, { data })) return undefined;
    return new Response("upgrade failed", { status: 400 });
  },
  websocket: {
    maxPayloadLength: MAX_MESSAGE_BYTES,
    idleTimeout: 45,
    backpressureLimit: MAX_SEND_BUFFER,
    closeOnBackpressureLimit: true,
    perMessageDeflate: false,
    open(ws) {
      ws.send(frame("connected", { connection_id: ws.data.connectionId, user_id: ws.data.userId }));
    },
    message(ws, message) {
      if (typeof message !== "string") {
        ws.send(
          frame("error", { code: "invalid_message", message: "binary frames are not accepted" }),
        );
        return;
      }
      handle(ws, server, message);
    },
    close(ws) {
      for (const roomId of [...ws.data.rooms]) leave(null, ws.data, server, roomId);
    },
  },
});

console.log(`reference server listening on ws://${server.hostname}:${server.port}/ws`);
