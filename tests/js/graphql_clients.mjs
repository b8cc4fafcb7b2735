// Drives a node in GraphQL mode with the real client libraries, so their own message flows (not a
// hand-written imitation) are what the node has to serve:
//
//   graphql-ws                  -> subprotocol graphql-transport-ws (modern)
//   subscriptions-transport-ws  -> subprotocol graphql-ws (legacy)
//
// For each library: connect with {token: "js"}, run a query, a mutation and a subscription that
// receives the mutation's publish and one from a `publish` command, unsubscribe, and close; and a
// client without a token must be refused. Every observation, and every frame each socket sends
// and receives, is printed as one JSON line: {"library", "client", "step", "payload"}.
//
// Usage: node graphql_clients.mjs <ws-url> <commands-url> <command-token>
// (or GATEWAY_WS_URL, GATEWAY_COMMANDS_URL, GATEWAY_COMMAND_TOKEN). Exits 0 when every check
// held, 1 with a {"step": "failed"} line otherwise, and fails by itself after
// GRAPHQL_CLIENTS_TIMEOUT_MS (default 20000) so a silent node cannot hang the test.

import { EventEmitter } from "node:events";

import { createClient } from "graphql-ws";
import { SubscriptionClient } from "subscriptions-transport-ws";
import WebSocket from "ws";

const [wsUrl, commandsUrl, commandToken] = [
  process.argv[2] ?? process.env.GATEWAY_WS_URL,
  process.argv[3] ?? process.env.GATEWAY_COMMANDS_URL,
  process.argv[4] ?? process.env.GATEWAY_COMMAND_TOKEN,
];
const TIMEOUT_MS = Number(process.env.GRAPHQL_CLIENTS_TIMEOUT_MS ?? 20000);

const HISTORY = "query History($room: String!) { messages(room: $room) { text } }";
const POST =
  "mutation Post($room: String!, $text: String!) { post(room: $room, text: $text) { id } }";
const SUBSCRIBE =
  "subscription Added($room: String!) { messageAdded(room: $room) { id room text } }";

const MODERN = "graphql-ws";
const LEGACY = "subscriptions-transport-ws";

function emit(library, client, step, payload = null) {
  process.stdout.write(JSON.stringify({ library, client, step, payload }) + "\n");
}

function fail(message) {
  emit(null, null, "failed", { message: String(message) });
  process.exit(1);
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

function sameJson(actual, expected, what) {
  const [a, e] = [JSON.stringify(actual), JSON.stringify(expected)];
  check(a === e, `${what}: expected ${e}, got ${a}`);
}

// Frames and closes of every socket, so a test can see exactly what each library sent and got.
const frames = new EventEmitter();
const openSockets = new Set();

function recordingWebSocket(library, client) {
  return class RecordingWebSocket extends WebSocket {
    constructor(...args) {
      super(...args);
      openSockets.add(this);
      this.on("open", () => emit(library, client, "ws-open", { protocol: this.protocol }));
      this.on("message", (data, isBinary) => {
        const message = isBinary ? { binary: data.length } : JSON.parse(data.toString());
        emit(library, client, "frame-in", message);
        frames.emit("in", library, client, message);
      });
      this.on("close", (code, reason) => {
        openSockets.delete(this);
        emit(library, client, "ws-close", { code, reason: reason.toString() });
        frames.emit("close", library, client, code);
      });
    }

    send(data, ...rest) {
      emit(library, client, "frame-out", JSON.parse(data));
      return super.send(data, ...rest);
    }
  };
}

function nextFrame(library, client, predicate) {
  return new Promise((resolve) => {
    const listener = (lib, who, message) => {
      if (lib === library && who === client && predicate(message)) {
        frames.off("in", listener);
        resolve(message);
      }
    };
    frames.on("in", listener);
  });
}

function socketsClosed() {
  return Promise.all(
    [...openSockets].map(
      (socket) =>
        new Promise((resolve) => {
          if (socket.readyState === WebSocket.CLOSED) resolve();
          else socket.once("close", resolve);
        }),
    ),
  );
}

// A queue of subscription results, read one at a time.
function channel() {
  const values = [];
  const waiters = [];
  let error = null;
  return {
    push(value) {
      const waiter = waiters.shift();
      if (waiter) waiter.resolve(value);
      else values.push(value);
    },
    fail(err) {
      error = err;
      for (const waiter of waiters.splice(0)) waiter.reject(err);
    },
    next() {
      if (values.length) return Promise.resolve(values.shift());
      if (error) return Promise.reject(error);
      return new Promise((resolve, reject) => waiters.push({ resolve, reject }));
    },
  };
}

const statsUrl = () => commandsUrl.replace(/\/commands\/?$/, "/stats");
const authorization = () => ({ Authorization: `Bearer ${commandToken}` });

async function stats() {
  const response = await fetch(statsUrl(), { headers: authorization() });
  check(response.ok, `GET /stats answered ${response.status}`);
  return response.json();
}

// A subscription is live once the origin answered its start; wait for the node to count it,
// rather than racing a publish against the registration.
async function subscriptionsReach(count) {
  for (;;) {
    const current = await stats();
    if (current.graphqlSubscriptions === count) {
      return { graphqlSubscriptions: count, graphqlDistinctInputs: current.graphqlDistinctInputs };
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function publish(keys, context) {
  const response = await fetch(commandsUrl, {
    method: "POST",
    headers: { ...authorization(), "Content-Type": "application/json" },
    body: JSON.stringify({ commands: [{ action: "publish", keys, context }] }),
  });
  const body = await response.text();
  check(response.ok, `publish command answered ${response.status}: ${body}`);
  return JSON.parse(body);
}

function posted(library, room, data) {
  return { id: data.post.id, room, text: `posted by ${library}` };
}

function commanded(room) {
  return { id: `command-${room}`, room, text: `published to ${room} by a command` };
}

// graphql-ws (graphql-transport-ws) -----------------------------------------------------------

function modernOnce(client, payload) {
  return new Promise((resolve, reject) => {
    let result = null;
    client.subscribe(payload, {
      next: (value) => (result = value),
      error: reject,
      complete: () => resolve(result),
    });
  });
}

async function modern() {
  const library = MODERN;
  const room = "js-modern";
  let nonLazyError = null;
  const client = createClient({
    url: wsUrl,
    webSocketImpl: recordingWebSocket(library, "main"),
    connectionParams: { token: "js" },
    lazy: false, // one connection for the whole flow, as an app holding a client open has
    retryAttempts: 0,
    onNonLazyError: (error) => (nonLazyError = error),
    on: { connected: (_socket, payload) => emit(library, "main", "connected", payload ?? null) },
  });

  const history = await modernOnce(client, {
    query: HISTORY,
    variables: { room },
    operationName: "History",
  });
  emit(library, "main", "query", history);
  sameJson(history, { data: { messages: [] } }, "query result");

  const updates = channel();
  const unsubscribe = client.subscribe(
    { query: SUBSCRIBE, variables: { room }, operationName: "Added" },
    {
      next: (value) => updates.push(value),
      error: (error) => updates.fail(error),
      complete: () => emit(library, "main", "subscription-complete"),
    },
  );
  emit(library, "main", "subscription-live", await subscriptionsReach(1));

  const mutation = await modernOnce(client, {
    query: POST,
    variables: { room, text: `posted by ${library}` },
    operationName: "Post",
  });
  emit(library, "main", "mutation", mutation);
  check(typeof mutation?.data?.post?.id === "string", "the mutation returned no id");

  const first = await updates.next();
  emit(library, "main", "subscription-next", first);
  sameJson(first, { data: { messageAdded: posted(library, room, mutation.data) } }, "first update");

  emit(library, "main", "publish-command", await publish([`room:${room}`], commanded(room)));
  const second = await updates.next();
  emit(library, "main", "subscription-next", second);
  sameJson(second, { data: { messageAdded: commanded(room) } }, "second update");

  unsubscribe(); // the library sends `complete` for the operation
  emit(library, "main", "unsubscribed");
  emit(library, "main", "node-forgot-subscription", await subscriptionsReach(0));

  await client.dispose();
  await socketsClosed();
  check(nonLazyError === null, `the client failed: ${describe(nonLazyError)}`);
  emit(library, "main", "disposed");
}

async function modernRefused() {
  const library = MODERN;
  const refusal = new Promise((resolve) => {
    createClient({
      url: wsUrl,
      webSocketImpl: recordingWebSocket(library, "refused"),
      lazy: false,
      retryAttempts: 0,
      onNonLazyError: resolve,
    });
  });
  const event = await refusal;
  const closed = { code: event?.code, reason: event?.reason };
  emit(library, "refused", "refused", closed);
  check(closed.code === 4403, `expected a close with 4403, got ${describe(event)}`);
  await socketsClosed();
}

// subscriptions-transport-ws (graphql-ws) ------------------------------------------------------

function legacyOnce(client, request) {
  return new Promise((resolve, reject) => {
    let result = null;
    client.request(request).subscribe({
      next: (value) => (result = value),
      error: reject,
      complete: () => resolve(result),
    });
  });
}

async function legacy() {
  const library = LEGACY;
  const room = "js-legacy";
  let acknowledged;
  const connected = new Promise((resolve, reject) => (acknowledged = { resolve, reject }));
  const client = new SubscriptionClient(
    wsUrl,
    {
      connectionParams: { token: "js" },
      reconnect: false,
      connectionCallback: (error) => (error ? acknowledged.reject(error) : acknowledged.resolve()),
    },
    recordingWebSocket(library, "main"),
  );

  // Asked before the socket is even open: the library queues the `start` and sends it right
  // behind `connection_init`, without waiting for the ack, as apps using it do.
  const query = legacyOnce(client, { query: HISTORY, variables: { room }, operationName: "History" });
  await connected;
  emit(library, "main", "connected");
  const history = await query;
  emit(library, "main", "query", history);
  sameJson(history, { data: { messages: [] } }, "query result");

  const updates = channel();
  const subscription = client
    .request({ query: SUBSCRIBE, variables: { room }, operationName: "Added" })
    .subscribe({
      next: (value) => updates.push(value),
      error: (error) => updates.fail(error),
      complete: () => emit(library, "main", "subscription-complete"),
    });
  emit(library, "main", "subscription-live", await subscriptionsReach(1));

  const mutation = await legacyOnce(client, {
    query: POST,
    variables: { room, text: `posted by ${library}` },
    operationName: "Post",
  });
  emit(library, "main", "mutation", mutation);
  check(typeof mutation?.data?.post?.id === "string", "the mutation returned no id");

  const first = await updates.next();
  emit(library, "main", "subscription-next", first);
  sameJson(first, { data: { messageAdded: posted(library, room, mutation.data) } }, "first update");

  emit(library, "main", "publish-command", await publish([`room:${room}`], commanded(room)));
  const second = await updates.next();
  emit(library, "main", "subscription-next", second);
  sameJson(second, { data: { messageAdded: commanded(room) } }, "second update");

  // The library sends `stop`; the legacy server answers `complete` for that operation.
  const stopped = nextFrame(library, "main", (message) => message.type === "complete");
  subscription.unsubscribe();
  emit(library, "main", "unsubscribed");
  emit(library, "main", "stop-answered", await stopped);
  emit(library, "main", "node-forgot-subscription", await subscriptionsReach(0));

  client.close(); // sends connection_terminate, then closes the socket
  await socketsClosed();
  emit(library, "main", "disposed");
}

async function legacyRefused() {
  const library = LEGACY;
  let client;
  const closed = new Promise((resolve) =>
    frames.on("close", (lib, who, code) => lib === library && who === "refused" && resolve(code)),
  );
  const error = await new Promise((resolve, reject) => {
    client = new SubscriptionClient(
      wsUrl,
      {
        reconnect: false,
        connectionCallback: (err) =>
          err ? resolve(err) : reject(new Error("a client without a token was acknowledged")),
      },
      recordingWebSocket(library, "refused"),
    );
  });
  emit(library, "refused", "refused", error);
  sameJson(error, { message: "missing token" }, "connection_error payload");
  const code = await closed;
  check(code === 1011, `expected the refused socket to be closed with 1011, got ${code}`);
  client.close();
  await socketsClosed();
}

function describe(value) {
  if (value instanceof Error) return value.stack ?? value.message;
  if (value && typeof value === "object" && "code" in value) {
    return `close ${value.code} ${JSON.stringify(value.reason ?? "")}`;
  }
  if (value && typeof value === "object" && "message" in value) {
    return `${value.type ?? "error"}: ${value.message}`; // ws's ErrorEvent, GraphQL errors
  }
  return JSON.stringify(value);
}

async function main() {
  if (!wsUrl || !commandsUrl || !commandToken) {
    fail("usage: node graphql_clients.mjs <ws-url> <commands-url> <command-token>");
  }
  const deadline = setTimeout(() => {
    const open = [...openSockets].map((socket) => socket.url);
    fail(`timed out after ${TIMEOUT_MS} ms; sockets still open: ${JSON.stringify(open)}`);
  }, TIMEOUT_MS);
  for (const [library, run] of [
    [MODERN, modern],
    [MODERN, modernRefused],
    [LEGACY, legacy],
    [LEGACY, legacyRefused],
  ]) {
    try {
      await run();
    } catch (error) {
      fail(`${library} (${run.name}): ${describe(error)}`);
    }
  }
  clearTimeout(deadline);
  emit(null, null, "done");
  // Both libraries were closed: nothing should keep the process alive now.
  setTimeout(() => fail("the clients left handles open after closing"), 3000).unref();
}

process.on("unhandledRejection", (error) => fail(`unhandled rejection: ${describe(error)}`));
process.on("uncaughtException", (error) => fail(`uncaught exception: ${describe(error)}`));
await main();
