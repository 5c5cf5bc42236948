// An implementation of the signing rule of docs/protocol.md, section 9, written from the page
// in another language than the project's, with nothing but Node.js: a check of the rule that
// shares no code with fleet.protocol. Used by tests/protocol/test_signing_interop.py.
//
//   node fleet_sign.js canonical KIND          < message.json  → the canonical bytes
//   node fleet_sign.js mac KIND HEXKEY         < message.json  → the MAC, lower-case hex
//   node fleet_sign.js sign KIND HEXKEY KEY_ID < message.json  → the message, signed
//   node fleet_sign.js numbers                 < ["hex of an IEEE double", ...] → JSON array
"use strict";
const crypto = require("crypto");
const fs = require("fs");

// RFC 8785 for messages whose member names are ASCII: JSON.stringify writes numbers and
// strings exactly as JCS does; only the member order needs sorting (UTF-16 code units).
function sorted(value) {
  if (Array.isArray(value)) return value.map(sorted);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.keys(value).sort().map((k) => [k, sorted(value[k])]));
  }
  return value;
}

function canonical(kind, message) {
  const copy = { ...message };
  delete copy.signature;
  return Buffer.from(`fleet/v1/${kind}\n` + JSON.stringify(sorted(copy)), "utf8");
}

function mac(kind, hexKey, message) {
  return crypto.createHmac("sha256", Buffer.from(hexKey, "hex")).update(canonical(kind, message)).digest("hex");
}

const [command, kind, hexKey, keyId] = process.argv.slice(2);
const input = JSON.parse(fs.readFileSync(0, "utf8"));
if (command === "canonical") {
  process.stdout.write(canonical(kind, input));
} else if (command === "mac") {
  process.stdout.write(mac(kind, hexKey, input));
} else if (command === "sign") {
  const signature = { alg: "HMAC-SHA256", key_id: keyId, mac: mac(kind, hexKey, input) };
  process.stdout.write(JSON.stringify({ ...input, signature }));
} else if (command === "numbers") {
  const view = new DataView(new ArrayBuffer(8));
  const doubles = input.map((hex) => {
    view.setBigUint64(0, BigInt("0x" + hex));
    return view.getFloat64(0);
  });
  process.stdout.write(JSON.stringify(doubles));
} else {
  process.stderr.write(`unknown command ${command}\n`);
  process.exit(2);
}
