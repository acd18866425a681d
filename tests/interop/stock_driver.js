// Runs ONE stock `sym` node (a checkout named by SYM_NODE_DIR) for tests/interop/test_stock_node.py.
// Not part of the runtime: it only starts the stock node with the options the test passes, and
// reports what the stock node itself observed as JSON lines on stdout. Commands arrive as JSON
// lines on stdin: {"cmd":"remember","categories":{...}} and {"cmd":"stop"} (and, for
// tests/interop/record_v2_captures.py, "dial" and "keys"). opts.emitV2 (true/false) sets the
// stock node's v2.0 emitter switch.
// HOME must already point at a scratch dir: the stock node keeps ~/.sym (identity, store,
// loopback registry) there.
'use strict';
const path = require('path');
const readline = require('readline');

const fs = require('fs');
const dir = process.env.SYM_NODE_DIR;
const opts = JSON.parse(process.argv[2] || '{}');

// The stock v2.0 emitter switch is a constant in lib/emit-policy.js (no env var). When the test
// asks for a given emitter, the module is provided with that value before lib/node.js loads,
// which is exactly what editing the constant in a local build does.
const policyPath = path.join(fs.realpathSync(dir), 'lib', 'emit-policy.js');
if (typeof opts.emitV2 === 'boolean' && fs.existsSync(policyPath)) {
  const Module = require('module');
  const policy = new Module(policyPath, module);
  policy.filename = policyPath;
  policy.loaded = true;
  policy.exports = { MMP_EMIT_V2: opts.emitV2 };
  require.cache[policyPath] = policy;
}
const { SymNode } = require(path.join(dir, 'lib', 'node.js'));
const { BonjourDiscovery, NullDiscovery } = require(path.join(dir, 'lib', 'discovery.js'));
const { FrameHandler } = require(path.join(dir, 'lib', 'frame-handler.js'));

function report(event, data) {
  process.stdout.write(JSON.stringify({ event, ...data }) + '\n');
}

// Observation only: what arrived on the wire (ciphertext or not) and the signature verdict the
// stock node reached for each CMB, before its own processing continues unchanged.
const handle = FrameHandler.prototype.handle;
FrameHandler.prototype.handle = function (peerId, peerName, msg) {
  if (msg && msg.type === 'cmb' && msg.cmb) {
    report('cmb-frame', {
      from: peerName,
      encrypted: typeof msg.cmb.categories === 'string' && !!msg.cmb._e2e,
      key: msg.cmb.metadata ? msg.cmb.metadata.key : null,
      suite: (msg.cmb.metadata && msg.cmb.metadata.signatureSuite) || null,
    });
  }
  return handle.call(this, peerId, peerName, msg);
};
const checkSig = FrameHandler.prototype._rejectOnBadSignature;
FrameHandler.prototype._rejectOnBadSignature = function (peerId, peerName, msg) {
  const rejected = checkSig.call(this, peerId, peerName, msg);
  const meta = msg.cmb && msg.cmb.metadata;
  report('signature', { from: peerName, key: meta ? meta.key : null, verified: !!msg._cmbVerified, rejected });
  return rejected;
};

const serviceType = opts.room === 'default' ? '_sym._tcp' : `_${opts.room}._tcp`;
const node = new SymNode({
  name: opts.name,
  room: opts.room,
  silent: true,
  discoveryServiceType: serviceType,
  discovery: opts.relayOnly ? new NullDiscovery() : new BonjourDiscovery({ mdns: !!opts.mdns, serviceType }),
  relay: opts.relay || null,
  relayToken: opts.relayToken || null,
  relayOnly: !!opts.relayOnly,
});
node._log = (msg) => report('log', { msg: String(msg) });
node.on('peer-joined', (p) => report('peer-joined', { id: p.id, name: p.name }));
node.on('cmb-accepted', (e) => {
  const meta = (e.cmb && e.cmb.metadata) || {};
  report('cmb-accepted', {
    key: e.key, source: e.source || null, content: e.content || null,
    remixed: e.remixed === true, createdBy: meta.createdBy || null,
  });
});

async function main() {
  await node.start();
  const emitV2 = fs.existsSync(policyPath) ? require(policyPath).MMP_EMIT_V2 === true : null;
  report('started', { port: node._port, nodeId: node.nodeId, name: node.name, emitV2 });
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', async (line) => {
    let cmd;
    try { cmd = JSON.parse(line); } catch { return; }
    if (cmd.cmd === 'remember') {
      const out = node.remember(cmd.categories, cmd.opts || {});
      const key = out && (out.key || (out.metadata && out.metadata.key));
      const rec = out && out.cmb;
      const meta = (rec && rec.metadata) || {};
      report('remembered', { key: key || null, signed: !!meta.sig, suite: meta.signatureSuite || null });
    } else if (cmd.cmd === 'dial') {
      // capture recording only: dial a given address (a logging proxy) as if discovered there
      node._discovery.emit('peer-found', cmd.host, cmd.port, cmd.peerId, cmd.peerName);
    } else if (cmd.cmd === 'keys') {
      // capture recording only: the throwaway node's X25519 private key, so captures can be opened
      const kp = JSON.parse(fs.readFileSync(path.join(node._dir, 'e2e-keypair.json'), 'utf8'));
      report('keys', { e2ePrivatePkcs8: kp.privateKey });
    } else if (cmd.cmd === 'stop') {
      await node.stop();
      report('stopped', {});
      process.exit(0);
    }
  });
  rl.on('close', async () => { await node.stop(); process.exit(0); });
}
main().catch((err) => { report('error', { msg: String(err && err.stack || err) }); process.exit(1); });
