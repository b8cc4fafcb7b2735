// Drives a node's @connections API with the AWS SDK for JavaScript v3's management client, as an
// API Gateway handler in Node.js would (endpoint https://<api>/<stage> there, the node here).
// The node's token travels in X-Gateway-Token, added by a middleware: the SDK signs with SigV4
// in Authorization. For each connection ID given: post a text and a binary message, get, delete,
// and post again (GoneException); then a malformed ID, a wrong token and an oversized message.
// Prints one JSON object: {"local": {...}, "remote": {...}, "malformed": ..., "wrongToken": ...,
// "tooLarge": ...}; errors as {"name", "status"}.
//
// Usage: node connections_api.mjs <endpoint> <token> <local-connection-id> <remote-connection-id>
// Exits 0 when it ran to its end (the Python test judges the output), 1 otherwise, and fails by
// itself after CONNECTIONS_API_TIMEOUT_MS (default 20000) so a silent node cannot hang the test.

import {
  ApiGatewayManagementApiClient,
  DeleteConnectionCommand,
  GetConnectionCommand,
  PostToConnectionCommand,
} from "@aws-sdk/client-apigatewaymanagementapi";

const [endpoint, token, localId, remoteId] = process.argv.slice(2);
const TIMEOUT_MS = Number(process.env.CONNECTIONS_API_TIMEOUT_MS ?? 20000);
const MAX_PAYLOAD = 1024 * 1024; // the node's default --send-buffer-bytes

setTimeout(() => {
  process.stderr.write(`no end after ${TIMEOUT_MS} ms\n`);
  process.exit(1);
}, TIMEOUT_MS).unref();

function client(withToken) {
  const api = new ApiGatewayManagementApiClient({
    endpoint,
    region: "eu-west-1",
    credentials: { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "not-a-secret" },
    maxAttempts: 1,
  });
  api.middlewareStack.add(
    (next) => async (args) => {
      args.request.headers["x-gateway-token"] = withToken;
      return next(args);
    },
    { step: "build", name: "gatewayToken" },
  );
  return api;
}

async function failure(promise) {
  try {
    await promise;
  } catch (error) {
    return { name: error.name, status: error.$metadata?.httpStatusCode ?? null };
  }
  return { name: "no error", status: null };
}

async function exercise(api, connectionId, label) {
  const text = new TextEncoder().encode(`from js to ${label}`);
  const post = await api.send(new PostToConnectionCommand({ ConnectionId: connectionId, Data: text }));
  await api.send(
    new PostToConnectionCommand({ ConnectionId: connectionId, Data: new Uint8Array([0xff, 0xfe]) }),
  );
  const got = await api.send(new GetConnectionCommand({ ConnectionId: connectionId }));
  const deleted = await api.send(new DeleteConnectionCommand({ ConnectionId: connectionId }));
  const afterDelete = await failure(
    api.send(new PostToConnectionCommand({ ConnectionId: connectionId, Data: text })),
  );
  return {
    post: post.$metadata.httpStatusCode,
    get: {
      ConnectedAt: got.ConnectedAt.toISOString(),
      LastActiveAt: got.LastActiveAt.toISOString(),
      Identity: got.Identity,
    },
    delete: deleted.$metadata.httpStatusCode,
    afterDelete,
  };
}

async function main() {
  const api = client(token);
  const report = {};
  report.local = await exercise(api, localId, "local");
  report.remote = await exercise(api, remoteId, "remote");
  report.malformed = await failure(api.send(new GetConnectionCommand({ ConnectionId: "not-an-id=" })));
  report.wrongToken = await failure(
    client("wrong").send(new GetConnectionCommand({ ConnectionId: localId })),
  );
  report.tooLarge = await failure(
    api.send(
      new PostToConnectionCommand({ ConnectionId: localId, Data: new Uint8Array(MAX_PAYLOAD + 1) }),
    ),
  );
  process.stdout.write(JSON.stringify(report) + "\n");
}

main().then(
  () => process.exit(0),
  (error) => {
    process.stderr.write(`${error?.name}: ${error?.message}\n${error?.stack}\n`);
    process.exit(1);
  },
);
