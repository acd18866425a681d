'use strict';
// Test-only stand-in for @sym-bot/core 0.3.36 (required by sym 0.5.8, served by no registry), so
// the original xmesh-agent runtime can run in tests/interop/test_original_runtime.py. Wire-visible
// parts follow what sym 0.5.8 calls: record shape, legacy `cmb-` key, X25519 + AES-256-GCM over
// `fields`. Cognition (encode, coupling, SVAF) is a plain permissive heuristic. See docs/interop.md.
const crypto = require('crypto');

const DIM = 32;
const CAT7 = ['focus', 'issue', 'intent', 'motivation', 'commitment', 'perspective', 'mood'];
const FIELD_WEIGHT_PROFILES = { uniform: Object.fromEntries(CAT7.map((f) => [f, 1.0])) };

function encodeText(text) {
  const v = new Array(DIM).fill(0);
  const s = String(text || '').toLowerCase();
  for (let i = 0; i + 2 < s.length + 1; i++) {
    const h = crypto.createHash('sha256').update(s.slice(i, i + 3)).digest();
    v[h[0] % DIM] += (h[1] & 1) ? 1 : -1;
  }
  const n = Math.sqrt(v.reduce((a, x) => a + x * x, 0)) || 1;
  return v.map((x) => x / n);
}
function encode(text) { return { h1: encodeText(text), h2: encodeText(String(text).split('').reverse().join('')) }; }
function cosine(a, b) { let d = 0; for (let i = 0; i < Math.min(a.length, b.length); i++) d += a[i] * b[i]; return d; }

function cmbKey(fields) {
  const parts = CAT7.map((f) => (fields && fields[f] && typeof fields[f] === 'object') ? (fields[f].text || '') : (fields?.[f] || ''));
  return 'cmb-' + crypto.createHash('sha256').update(parts.join('|')).digest('hex').slice(0, 32);
}
function remixKey(fields, parentKey, receiverName) {
  return 'cmb-' + crypto.createHash('sha256').update(cmbKey(fields) + '|' + parentKey + '|' + receiverName).digest('hex').slice(0, 32);
}

function normField(name, v) {
  const text = typeof v === 'string' ? v : (v && typeof v.text === 'string' ? v.text : '');
  const out = { text, vector: encodeText(text) };
  if (name === 'mood' && v && typeof v === 'object') {
    if (typeof v.valence === 'number') out.valence = v.valence;
    if (typeof v.arousal === 'number') out.arousal = v.arousal;
  }
  return out;
}
function createCMB({ rawText, fields, createdBy, lineage } = {}) {
  const f = {};
  if (fields) {
    for (const name of CAT7) if (fields[name] !== undefined && fields[name] !== null) f[name] = normField(name, fields[name]);
  } else {
    f.focus = normField('focus', rawText || '');
  }
  return {
    key: cmbKey(f),
    createdBy: createdBy || 'unknown',
    createdAt: Date.now(),
    fields: f,
    lineage: lineage || { parents: [], ancestors: [], method: null },
  };
}
function renderContent(cmb) {
  const f = cmb?.fields || {};
  return CAT7.filter((n) => f[n] && f[n].text).map((n) => `${n}: ${f[n].text}`).join(' | ');
}

function e2eGenerateKeyPair() {
  return crypto.generateKeyPairSync('x25519', {
    publicKeyEncoding: { type: 'spki', format: 'der' },
    privateKeyEncoding: { type: 'pkcs8', format: 'der' },
  });
}
function e2eDeriveSharedSecret(priv, pub) {
  return crypto.diffieHellman({
    privateKey: crypto.createPrivateKey({ key: priv, format: 'der', type: 'pkcs8' }),
    publicKey: crypto.createPublicKey({ key: pub, format: 'der', type: 'spki' }),
  });
}
function encryptFields(fields, secret) {
  const nonce = crypto.randomBytes(12);
  const c = crypto.createCipheriv('aes-256-gcm', secret, nonce);
  const ct = Buffer.concat([c.update(JSON.stringify(fields), 'utf8'), c.final(), c.getAuthTag()]);
  return { ciphertext: ct.toString('base64'), nonce: nonce.toString('base64') };
}
function decryptFields(ciphertext, nonce, secret) {
  const buf = Buffer.from(ciphertext, 'base64');
  const d = crypto.createDecipheriv('aes-256-gcm', secret, Buffer.from(nonce, 'base64'));
  d.setAuthTag(buf.subarray(buf.length - 16));
  return JSON.parse(Buffer.concat([d.update(buf.subarray(0, buf.length - 16)), d.final()]).toString('utf8'));
}

class MeshNode {
  constructor() { this._h1 = new Array(DIM).fill(0); this._h2 = new Array(DIM).fill(0); this._peers = new Map(); this.couplingDecisions = new Map(); this.coherence = 0; }
  updateLocalState(h1, h2) { this._h1 = h1; this._h2 = h2; }
  addPeer(id, h1, h2) { this._peers.set(id, { h1, h2 }); }
  removePeer(id) { this._peers.delete(id); this.couplingDecisions.delete(id); }
  coupledState() {
    let total = 0;
    for (const [id, p] of this._peers) {
      const c = cosine(this._h1, p.h1);
      const drift = 1 - c;
      this.couplingDecisions.set(id, { drift, decision: drift < 0.5 ? 'aligned' : drift < 1 ? 'guarded' : 'rejected' });
      total += c;
    }
    this.coherence = this._peers.size ? total / this._peers.size : 0;
    return [this._h1, this._h2];
  }
}

class SVAFEvaluator { constructor() {} async evaluate() { return null; } }

// Heuristic SVAF: accept anything not already held (the stand-in is permissive on purpose).
async function processHeuristicSVAF({ msg, peerName, localName, now }) {
  const cmb = msg.cmb ? { ...msg.cmb } : null;
  const content = msg.content || (cmb ? renderContent(cmb) : '');
  const fusedEntry = {
    ...msg,
    content,
    source: msg.source || cmb?.createdBy || peerName,
    storedAt: now,
    svaf: { method: 'heuristic-standin', decision: 'aligned', totalDrift: 0 },
  };
  return { accepted: true, decision: 'aligned', totalDrift: 0, fusedEntry, fusedContent: content, fusedCMB: cmb };
}

class WakeManager {
  constructor(opts) { this._o = opts; }
  loadWakeChannels() {} saveWakeChannels() {}
  wakeSleepingPeers() {} wakeIfNeeded() { return false; } wakeAllPeers() {}
}
class XMesh { constructor(opts) { this._o = opts; } ingestSignal() {} }

module.exports = {
  DIM, FIELD_WEIGHT_PROFILES, encode, cmbKey, remixKey, createCMB, renderContent,
  e2eGenerateKeyPair, e2eDeriveSharedSecret, encryptFields, decryptFields,
  MeshNode, SVAFEvaluator, processHeuristicSVAF, WakeManager, XMesh,
};
