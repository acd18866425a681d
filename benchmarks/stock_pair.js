// One stock `sym` node (the checkout SYM_NODE_DIR names) as one side of benchmarks/admission.py's
// stock pair. Not part of the runtime. argv[2] is JSON: {"name", "room", "role": "sender"|"receiver"}.
// HOME must be a scratch dir shared by both sides: the nodes meet through its ~/.sym/loopback.
// Times are process.hrtime (CLOCK_MONOTONIC), the clock Python's time.monotonic() reads.
//   receiver: counts the stock node's own 'svaf-decision' events (one per inbound CMB it decided)
//             and prints "got <count> <seconds>" at most every 5 ms, as wire.py's receiver does.
//   sender:   stdin JSON lines {"cmd":"send","texts":[{focus,...},...]} -> remember() each, then
//             prints {"event":"sent","n","t0"}; {"cmd":"stop"} stops the node.
'use strict';
const path = require('path');
const readline = require('readline');

const dir = process.env.SYM_NODE_DIR;
const opts = JSON.parse(process.argv[2] || '{}');
const { SymNode } = require(path.join(dir, 'lib', 'node.js'));
const { BonjourDiscovery } = require(path.join(dir, 'lib', 'discovery.js'));

const now = () => Number(process.hrtime.bigint()) / 1e9;
const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const serviceType = `_${opts.room}._tcp`;
const node = new SymNode({
  name: opts.name,
  room: opts.room,
  silent: true,
  discoveryServiceType: serviceType,
  discovery: new BonjourDiscovery({ mdns: false, serviceType }),
});
node._log = () => {};
node.on('peer-joined', (p) => say({ event: 'peer-joined', name: p.name }));

let decided = 0;
let last = 0;
let reported = 0;
if (opts.role === 'receiver') {
  node.on('svaf-decision', () => { decided += 1; last = now(); });
  setInterval(() => {
    if (decided !== reported) {
      reported = decided;
      process.stdout.write(`got ${decided} ${last}\n`);
    }
  }, 5);
}

async function main() {
  await node.start();
  say({ event: 'started', name: node.name });
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', async (line) => {
    let cmd;
    try { cmd = JSON.parse(line); } catch { return; }
    if (cmd.cmd === 'send') {
      const t0 = now();
      for (const categories of cmd.texts) node.remember(categories);
      say({ event: 'sent', n: cmd.texts.length, t0 });
    } else if (cmd.cmd === 'stop') {
      await node.stop();
      process.exit(0);
    }
  });
  rl.on('close', async () => { await node.stop(); process.exit(0); });
}

main().catch((err) => { say({ event: 'error', msg: String(err && err.stack || err) }); process.exit(1); });
