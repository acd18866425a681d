// Runs ONE plain sym 0.5.x node (the library the original xmesh-agent runtime runs on, found under
// XMESH_ORIGINAL_DIR/node_modules/@sym-bot/sym) for tests/interop/test_original_runtime.py.
// Not part of the runtime: it starts the node with the options the test passes and reports what
// the node itself observed as JSON lines on stdout. Commands arrive as JSON lines on stdin:
// {"cmd":"remember","fields":{...}} and {"cmd":"stop"}. HOME must point at a scratch dir.
'use strict';
const path = require('path');
const readline = require('readline');

const lib = path.join(process.env.XMESH_ORIGINAL_DIR, 'node_modules', '@sym-bot', 'sym');
const opts = JSON.parse(process.argv[2] || '{}');
const { SymNode } = require(path.join(lib, 'lib', 'node.js'));
const { FrameHandler } = require(path.join(lib, 'lib', 'frame-handler.js'));

function report(event, data) {
  process.stdout.write(JSON.stringify({ event, ...data }) + '\n');
}

// Observation only: what arrived on the wire, before the node's own processing runs unchanged.
const handle = FrameHandler.prototype.handle;
FrameHandler.prototype.handle = function (peerId, peerName, msg) {
  if (msg && msg.type === 'cmb' && msg.cmb) {
    report('cmb-frame', {
      from: peerName,
      encrypted: typeof msg.cmb.fields === 'string' && !!msg.cmb._e2e,
      key: msg.cmb.key || null,
      parents: (msg.cmb.lineage && msg.cmb.lineage.parents) || [],
    });
  }
  return handle.call(this, peerId, peerName, msg);
};

const group = opts.group;
const node = new SymNode({
  name: opts.name,
  group,
  discoveryServiceType: group === 'default' ? '_sym._tcp' : `_${group}._tcp`,
  relay: opts.relay || null,
  relayToken: opts.relayToken || null,
  relayOnly: !!opts.relayOnly,
  silent: true,
});
node.on('peer-joined', (p) => report('peer-joined', { id: p.id, name: p.name }));
node.on('cmb-accepted', (e) => {
  const f = (e.cmb && e.cmb.fields) || {};
  report('cmb-accepted', {
    key: e.key,
    source: e.source || null,
    createdBy: (e.cmb && e.cmb.createdBy) || null,
    focus: f.focus ? f.focus.text : null,
  });
});
node._log = (msg) => report('log', { msg: String(msg) });

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', async (line) => {
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch {
    return;
  }
  if (cmd.cmd === 'remember') {
    const entry = node.remember(cmd.fields);
    report('remembered', { key: entry ? entry.key : null });
  } else if (cmd.cmd === 'stop') {
    await node.stop();
    report('stopped', {});
    process.exit(0);
  }
});

node.start().then(
  () => report('started', { nodeId: node.nodeId, version: require(path.join(lib, 'package.json')).version }),
  (err) => {
    report('error', { msg: String(err && err.message) });
    process.exit(1);
  },
);
