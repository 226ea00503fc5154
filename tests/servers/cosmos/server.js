#!/usr/bin/env node
// A local Cosmos DB SQL-API server for tests: @vercel/cosmosdb-server over HTTPS with our own
// certificate and HTTP keep-alive, bound to 127.0.0.1.
//
//   node server.js --port PORT --cert CERT.pem --key KEY.pem
//
// --port 0 lets the OS choose a free port. Once listening, one JSON line goes to stdout:
// {"ready": true, "port": N}. Nothing else is written to stdout. The process exits when its
// stdin closes, so it dies with whatever started it, even if that process is killed.
"use strict";

const fs = require("fs");

// Reading a missing document makes the stock handler throw a TypeError, which the package answers
// with 500. Real Cosmos DB answers 404 NotFound, and stores map that to "not found", so check for
// the document first with the package's own readOperation (which answers 404) and leave every
// other case to the stock handler. routes.js copies each handler's `default` when it is first
// loaded, so this must run before the package's index is required.
const readDocument = require("@vercel/cosmosdb-server/lib/handler/read-document");
const { readOperation } = require("@vercel/cosmosdb-server/lib/handler/_document-operations");
const stockReadDocument = readDocument.default;
readDocument.default = (account, req, res, params) => {
  const collection = account.database(params.dbId).collection(params.collId);
  if (collection.read()) {
    let result;
    try {
      result = readOperation(collection, {
        partitionKey: req.headers["x-ms-documentdb-partitionkey"],
        id: params.docId,
      });
    } catch {
      result = undefined; // an unparseable partition key: the stock handler answers it
    }
    if (result !== undefined && result.statusCode === 404) {
      res.statusCode = 404;
      return result.body;
    }
  }
  return stockReadDocument(account, req, res, params);
};

const { createHttpsServer } = require("@vercel/cosmosdb-server");

function parseArgs(argv) {
  const args = {};
  for (let i = 0; i < argv.length; i += 1) {
    const name = argv[i];
    const value = argv[i + 1];
    if (!["--port", "--cert", "--key"].includes(name) || value === undefined) {
      throw new Error(`usage: server.js --port PORT --cert CERT --key KEY (bad: ${name})`);
    }
    args[name.slice(2)] = value;
    i += 1;
  }
  for (const name of ["port", "cert", "key"]) {
    if (args[name] === undefined) throw new Error(`missing --${name}`);
  }
  const port = Number.parseInt(args.port, 10);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`bad --port ${args.port}`);
  return { port, cert: args.cert, key: args.key };
}

const args = parseArgs(process.argv.slice(2));

// The package's stock CLI sends "connection: close" on every response (about 33 requests/s from
// the Python SDK); keepAlive makes it answer "connection: keep-alive" instead.
const server = createHttpsServer({
  cert: fs.readFileSync(args.cert),
  key: fs.readFileSync(args.key),
  minVersion: "TLSv1.2",
  keepAlive: true,
});
// Idle client connections stay open longer than Node's 5 s default, so a pooled connection is
// not closed under a client that pauses between tests.
server.keepAliveTimeout = 120_000;
server.headersTimeout = 121_000;

// Keep stdout for the ready line only: the parent reads one line and then stops reading.
console.log = console.error;

server.listen(args.port, "127.0.0.1", () => {
  process.stdout.write(`${JSON.stringify({ ready: true, port: server.address().port })}\n`);
});

function shutdown() {
  server.close();
  server.closeAllConnections();
  process.exit(0);
}

process.stdin.on("end", shutdown);
process.stdin.on("close", shutdown);
process.stdin.on("error", shutdown);
process.stdin.resume();
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
