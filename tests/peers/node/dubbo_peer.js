'use strict';
/*
 * Real dubbo peers for protoc-x's tests (driven by tests/peers/dubbo_peers.py).
 *
 *   node dubbo_peer.js server          sofa-rpc-node RpcServer + dubbo-remoting on 127.0.0.1:0;
 *                                      prints {"event":"listening","port":N}, then one JSON line
 *                                      per request it decoded and per response it sent; exits
 *                                      when stdin closes.
 *   node dubbo_peer.js client PORT     dubbo-remoting's encoder (hessian.js, js-to-java values)
 *                                      sends a scripted set of requests to 127.0.0.1:PORT and
 *                                      prints one JSON line per frame it sent.
 *   node dubbo_peer.js decode          reads hex frames (one per line) from stdin and prints
 *                                      dubbo-remoting's decoding of each as a JSON line.
 */

const net = require('net');
const java = require('js-to-java');
const dubbo = require('dubbo-remoting');
const protocol = require('dubbo-remoting/lib/protocol');
const DubboRequest = require('dubbo-remoting/lib/protocol/request');
const Invocation = require('dubbo-remoting/lib/protocol/invocation');
const DubboDecoder = require('dubbo-remoting/lib/decoder');
const { RpcServer, RpcResponse } = require('sofa-rpc-node').server;

const LOOPBACK = '127.0.0.1';
const SERVICE = 'com.acme.DemoService';
const SECOND_SERVICE = 'com.acme.InventoryService'; // (two services: routes by domain)
const VERSION = '1.0.0';

function emit(obj) {
  process.stdout.write(JSON.stringify(obj, jsonReplacer) + '\n');
}

function jsonReplacer(key, value) {
  if (value && value.type === 'Buffer' && Array.isArray(value.data)) {
    return { $bytes: Buffer.from(value.data).toString('hex') };
  }
  if (typeof value === 'bigint') return value.toString();
  return value;
}

const quietLogger = {
  debug() {},
  info() {},
  warn(...args) { process.stderr.write('[warn] ' + args.join(' ') + '\n'); },
  error(...args) { process.stderr.write('[error] ' + args.join(' ') + '\n'); },
};

// --- server --------------------------------------------------------------------------------

// dubbo-remoting's decoder drops the two-way flag; keep it so oneway requests get no answer.
class FlagAwareDecoder extends DubboDecoder {
  _decode() {
    if (this._buf && this._buf.length >= 3) this._flag = this._buf[2];
    return super._decode();
  }
  emit(event, obj) {
    if (event === 'request' && obj && this._flag !== undefined) {
      obj.twoWay = (this._flag & 0x40) !== 0;
    }
    return super.emit(event, obj);
  }
}

const flagAwareProtocol = {
  name: dubbo.name,
  encoder: options => dubbo.encoder(options),
  decoder: options => new FlagAwareDecoder(options),
};

class OnewayAwareResponse extends RpcResponse {
  async send(res) {
    if (this.req.twoWay === false) return;
    await super.send(res);
    emit({
      event: 'response',
      id: String(this.req.packetId),
      hex: this.meta.data ? Buffer.from(this.meta.data).toString('hex') : null,
    });
  }
}

// RpcServer has no bind-host option: listen on loopback only.
class LoopbackRpcServer extends RpcServer {
  _startServer(port) {
    const server = net.createServer();
    server.once('error', err => { this.emit('error', err); });
    server.on('connection', socket => { this._handleSocket(socket); });
    server.listen(port, LOOPBACK, () => {
      this.publishPort = server.address().port;
    });
    return server;
  }
}

// Answers any method: "ok:<method>:<argument count>"; fail() throws; nothing() returns null.
const delegate = new Proxy({}, {
  get(target, name) {
    if (typeof name !== 'string') return undefined;
    return async function (...args) {
      if (name === 'fail') throw new Error('boom from ' + name);
      if (name === 'nothing') return null;
      return { $class: 'java.lang.String', $: `ok:${name}:${args.length}` };
    };
  },
});

async function runServer() {
  const server = new LoopbackRpcServer({
    appName: 'protocx-peers',
    protocol: flagAwareProtocol,
    responseClass: OnewayAwareResponse,
    port: 0,
    logger: quietLogger,
    killTimeout: 1000,
  });
  server.addService({ interfaceName: SERVICE, version: VERSION, group: 'protocx' }, delegate);
  server.addService({ interfaceName: SECOND_SERVICE, version: VERSION, group: 'protocx' }, delegate);
  server.on('error', err => quietLogger.warn('server error: ' + (err && err.message)));
  server.on('request', ({ req }) => {
    const data = req.data || {};
    emit({
      event: 'request',
      id: String(req.packetId),
      twoWay: req.twoWay,
      service: data.serverSignature,
      method: data.methodName,
      argTypes: data.methodArgSigs,
      args: data.args,
      attachments: data.requestProps,
    });
  });
  await server.start();
  emit({ event: 'listening', port: server.publishPort });
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}

// --- client --------------------------------------------------------------------------------

function requestData(method, args, service = SERVICE + ':' + VERSION) {
  // what sofa-rpc-node's RpcConsumer hands to the dubbo-remoting encoder (its RpcRequest puts
  // the signature in requestProps.service; we add a timeout and a custom attachment)
  const requestProps = { service, timeout: '3000', 'x-color': 'blue' };
  return { serverSignature: service, methodName: method, args, group: 'protocx', requestProps };
}

function longText(units) {
  // non-ASCII, BMP and non-BMP text; a surrogate pair straddles the 0x8000 chunk boundary
  let s = 'Dubbo ünïcödé 中文 ';
  while (s.length < 0x8000 - 1) s += 'abcdefghij';
  s = s.slice(0, 0x8000 - 1) + '😀';
  while (s.length < units) s += '日本語😀x';
  return s.slice(0, units);
}

function scriptedRequests() {
  const address = { $class: 'com.acme.Address', $: { city: '杭州', zip: java.int(310000) } };
  const user = {
    $class: 'com.acme.User',
    $: {
      name: 'alice',
      age: java.int(30),
      home: address,
      work: address, // the same instance again: hessian.js writes a ref (0x51)
      tags: java.List(['admin', 'ops']),
      attrs: java.Map({ team: 'core', level: java.int(3) }),
    },
  };
  const bob = {
    $class: 'com.acme.User',
    $: {
      name: 'bob',
      age: java.int(41),
      home: null,
      work: address,
      tags: java.List([]),
      attrs: java.Map({}),
    },
  };
  return [
    { label: 'request-objects', data: requestData('register', [user, java.long(1234567890123), true, 2.5]) },
    { label: 'request-long-strings', data: requestData('echo', [longText(1500), longText(40000), longText(70000)]) },
    { label: 'request-list-map', data: requestData('batch', [[user, bob], java.Map({ a: java.int(1), b: 'two' }), Buffer.from('raw-bytes')]) },
    { label: 'oneway-request', oneway: true, data: requestData('notify', ['fire and forget']) },
    { label: 'heartbeat-request', heartbeat: true },
    { label: 'request-fail', data: requestData('fail', ['x']) },
    { label: 'request-unknown-service', data: requestData('echo', ['x'], 'com.acme.Missing:' + VERSION) },
    // last: the answer (status 20, body N without a result flag) breaks dubbo-remoting's decoder
    // (DubboDecoder then neither emits 'error' nor decodes further: do not wait for it)
    { label: 'request-null-result', noWait: true, data: requestData('nothing', []) },
  ];
}

function encodeScripted(item, id) {
  const options = { codecType: 'hessian2' };
  if (item.heartbeat) return protocol.heartbeatEncode(id, { timeout: 3000 }, options);
  if (!item.oneway) return protocol.requestEncode(id, item.data, options);
  // dubbo-remoting's requestEncode is always two-way; its Request class has the flag
  const req = new DubboRequest(id);
  req.isTwoWay = false;
  const [path, version] = item.data.serverSignature.split(':');
  req.data = new Invocation({
    methodName: item.data.methodName,
    args: item.data.args,
    attachments: Object.assign({ dubbo: '5.3.0', path, group: item.data.group, version }, item.data.requestProps),
  });
  return req.encode(options);
}

async function runClient(port) {
  const socket = net.connect(port, LOOPBACK);
  await new Promise((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject); });
  const decoder = dubbo.decoder({});
  const waiting = new Map();
  const onPacket = packet => {
    const done = waiting.get(String(packet.packetId));
    if (done) done(packet);
  };
  decoder.on('response', onPacket);
  decoder.on('heartbeat_ack', onPacket);
  socket.pipe(decoder);

  let id = 100;
  for (const item of scriptedRequests()) {
    id += 1;
    const buf = encodeScripted(item, id);
    const answered = item.oneway || item.noWait ? null : new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no answer to ' + item.label)), 5000);
      waiting.set(String(id), packet => { clearTimeout(timer); resolve(packet); });
    });
    socket.write(buf);
    const decoded = protocol.decode(buf, {});
    emit({ label: item.label, id: String(id), hex: buf.toString('hex'), decoded });
    if (answered) await answered;
  }
  await new Promise(resolve => setTimeout(resolve, 200));
  socket.end();
}

// --- decode --------------------------------------------------------------------------------

async function runDecode() {
  let input = '';
  for await (const chunk of process.stdin) input += chunk;
  for (const line of input.split('\n')) {
    const hex = line.trim();
    if (!hex) continue;
    try {
      const buf = Buffer.from(hex, 'hex');
      const decoded = protocol.decode(buf, {});
      emit({ ok: true, decoded });
    } catch (err) {
      emit({ ok: false, error: String(err && err.message) });
    }
  }
}

const mode = process.argv[2];
const main = { server: runServer, client: () => runClient(Number(process.argv[3])), decode: runDecode }[mode];
if (!main) {
  process.stderr.write('usage: dubbo_peer.js server | client PORT | decode\n');
  process.exit(2);
}
main().catch(err => {
  process.stderr.write(String(err && err.stack || err) + '\n');
  process.exit(1);
});
