'use strict';
/*
 * Real bolt v2 peers for protoc-x's tests (driven by tests/peers/boltv2_peers.py):
 * npm sofa-bolt-node 2.0.1, whose protocol type 'bolt2' writes SOFABolt's RpcProtocolV2
 * (first byte 0x02, ver1, switch byte; a CRC32 of the frame after the content when the switch
 * is on), and sofa-rpc-node 2.10.0's RpcServer on top of it. Both hessian2 (codec 1) and
 * protobuf (codec 11, protobufjs) content.
 *
 *   node bolt_peer.js server         sofa-rpc-node RpcServer (sofa-bolt-node protocol) on
 *                                    127.0.0.1:0 serving com.acme.HelloService:1.0:
 *                                    sayHello(name) answers "hello " + name (hessian2) or
 *                                    HelloReply{message: "hello " + name} (protobuf); fail()
 *                                    throws. Prints {"event":"listening","port":N}, then one
 *                                    JSON line per request, heartbeat, response it sent and
 *                                    decode error; exits when stdin closes.
 *   node bolt_peer.js client PORT < SCRIPT
 *                                    sofa-bolt-node's own encoder and decoder streams on one
 *                                    connection to 127.0.0.1:PORT, set to bolt2 (ver1 2, CRC
 *                                    on unless the item says otherwise), sending the JSON list
 *                                    SCRIPT (stdin) of items {label, id, kind:
 *                                    request|oneway|heartbeat, codec, method, args|name,
 *                                    service, timeout, props, crc, ver1, protocol ('bolt' for
 *                                    bolt v1), wait}. All items are written at once
 *                                    (pipelined); prints one JSON line per item: the frame as
 *                                    written (hex), the library's own serialisation of the
 *                                    content, and the answer as the library decoded it.
 */

const net = require('net');
const ByteBuffer = require('byte');
const protobuf = require('protobufjs');
const bolt = require('sofa-bolt-node');
const RpcRequestCommand = require('sofa-bolt-node/lib/protocol/rpc_req_cmd');
const ResponseStatus = require('sofa-bolt-node/lib/protocol/enum/response_status');
const { RpcServer, RpcResponse } = require('sofa-rpc-node').server;

const LOOPBACK = '127.0.0.1';
const INTERFACE = 'com.acme.HelloService';
const VERSION = '1.0';
const PROTO = `
syntax = "proto3";
package com.acme;
message HelloRequest { string name = 1; int32 count = 2; }
message HelloReply { string message = 1; }
service HelloService { rpc sayHello (HelloRequest) returns (HelloReply); }
`;
const proto = protobuf.parse(PROTO).root;

function emit(obj) {
  process.stdout.write(JSON.stringify(obj, jsonReplacer) + '\n');
}

function jsonReplacer(key, value) {
  if (value && value.type === 'Buffer' && Array.isArray(value.data)) {
    return { $bytes: Buffer.from(value.data).toString('hex') };
  }
  if (value instanceof Error) return { error: value.message };
  if (typeof value === 'bigint') return value.toString();
  return value;
}

// --- server --------------------------------------------------------------------------------

const serverLogger = {
  debug() {},
  info() {},
  // sofa-rpc-node logs a connection's decode errors (e.g. "CRC check failed!") as warnings
  warn(...args) { emit({ event: 'warn', message: args.map(String).join(' ') }); },
  error(...args) { emit({ event: 'error', message: args.map(a => (a && a.message) || String(a)).join(' ') }); },
};

// sofa-bolt-node's decoder forgets the request type (its decoded request has no oneway flag),
// so sofa-rpc-node answers oneway requests. Keep the type byte (offset 2 in v2, 1 in v1) and
// let OnewayAwareResponse stay silent, as a SOFABolt server does.
function typeOf(buf) {
  return buf[0] === 0x02 ? buf[2] : buf[1];
}

function recordingDecoder(options) {
  const decoder = bolt.decoder(options);
  const decode = decoder._decode.bind(decoder);
  decoder._decode = () => {
    if (decoder._buf && decoder._buf.length >= 3) decoder._type = typeOf(decoder._buf);
    return decode();
  };
  const emitEvent = decoder.emit.bind(decoder);
  decoder.emit = (event, obj) => {
    if (event === 'request' && obj) obj.oneway = decoder._type === 0x02;
    if (event === 'heartbeat' && obj) {
      emit({ event: 'heartbeat', id: obj.packetId, options: obj.options });
    }
    return emitEvent(event, obj);
  };
  return decoder;
}

const recordingProtocol = {
  name: 'bolt',
  encoder: options => bolt.encoder(options),
  decoder: options => recordingDecoder(options),
};

class OnewayAwareResponse extends RpcResponse {
  async send(res) {
    if (this.req.oneway) return;
    await super.send(res);
    emit({
      event: 'response',
      id: this.req.packetId,
      hex: this.meta.data ? Buffer.from(this.meta.data).toString('hex') : null,
      isError: !!res.isError,
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

const delegate = {
  async sayHello(arg) {
    if (arg && typeof arg === 'object' && 'name' in arg) return { message: 'hello ' + arg.name };
    return 'hello ' + arg;
  },
  async fail() {
    throw new Error('boom');
  },
};

async function runServer() {
  const server = new LoopbackRpcServer({
    appName: 'protocx-peers',
    protocol: recordingProtocol,
    responseClass: OnewayAwareResponse,
    port: 0,
    proto,
    logger: serverLogger,
    killTimeout: 1000,
  });
  server.addService({ interfaceName: INTERFACE, version: VERSION, group: 'protocx' }, delegate);
  server.on('error', err => emit({ event: 'error', message: String(err && err.message) }));
  server.on('request', ({ req }) => {
    const data = req.data || {};
    emit({
      event: 'request',
      id: req.packetId,
      oneway: !!req.oneway,
      options: {
        protocolType: req.options.protocolType,
        boltVersion: req.options.boltVersion,
        codecType: req.options.codecType,
        crcEnable: req.options.crcEnable,
        timeout: req.options.timeout,
      },
      className: req.className,
      service: data.serverSignature,
      method: data.methodName,
      argTypes: data.methodArgSigs,
      args: (data.args || []).map(arg => (arg && arg.toObject ? arg.toObject() : arg)),
      requestProps: data.requestProps,
    });
  });
  await server.start();
  emit({ event: 'listening', port: server.publishPort, responseStatus: ResponseStatus });
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}

// --- client --------------------------------------------------------------------------------

function requestOf(item) {
  const service = item.service || INTERFACE + ':' + VERSION;
  const codecType = item.codec || 'hessian2';
  const message = { name: item.name };
  if (item.count !== undefined) message.count = item.count;
  const args = item.args || (codecType === 'protobuf' ? [message] : [item.name]);
  return {
    serverSignature: service,
    methodName: item.method || 'sayHello',
    args,
    timeout: item.timeout || 3000,
    codecType,
    targetAppName: item.targetApp,
    requestProps: Object.assign({ service }, item.props || {}),
    oneway: item.kind === 'oneway',
  };
}

// What sofa-bolt-node serialises as the content of this request (its own command object,
// written into a fresh buffer): the frame's content must be exactly these bytes.
function libraryContent(req) {
  const cmd = new RpcRequestCommand(req, { codecType: req.codecType, proto });
  const buf = ByteBuffer.allocate(1024);
  cmd.serializeContent(buf);
  return buf.array();
}

function libraryHeaders(req) {
  const cmd = new RpcRequestCommand(req, { codecType: req.codecType, proto });
  const buf = ByteBuffer.allocate(1024);
  cmd.serializeHeader(buf);
  return buf.array();
}

async function runClient(port, script) {
  const socket = net.connect(port, LOOPBACK);
  await new Promise((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject); });
  const sentReqs = new Map();
  const encoder = bolt.encoder({ sentReqs, proto });
  const decoder = bolt.decoder({ sentReqs, proto });
  encoder.pipe(socket);
  socket.pipe(decoder);
  const waiting = new Map();
  const onPacket = packet => {
    const done = waiting.get(packet.packetId);
    if (done) {
      waiting.delete(packet.packetId);
      done(packet);
    } else {
      emit({ event: 'unexpected', packet });
    }
  };
  decoder.on('response', onPacket);
  decoder.on('heartbeat_ack', onPacket);
  decoder.on('error', err => emit({ event: 'decode-error', message: err.message }));
  socket.on('error', err => emit({ event: 'socket-error', message: err.message }));

  const results = [];
  for (const item of script) {
    encoder.protocolType = item.protocol || 'bolt2';
    encoder.boltVersion = item.ver1 === undefined ? 2 : item.ver1;
    encoder.crcEnable = item.crc === undefined ? true : item.crc;
    const id = item.id;
    const out = { label: item.label, id, kind: item.kind || 'request' };
    const answered = item.kind === 'oneway' || item.wait === false ? null : new Promise(resolve => {
      const timer = setTimeout(() => resolve({ timeout: true }), item.waitMs || 5000);
      waiting.set(id, packet => { clearTimeout(timer); resolve(packet); });
    });
    const written = new Promise(resolve => {
      const done = (err, packet) => {
        out.hex = packet && packet.meta && packet.meta.data ? Buffer.from(packet.meta.data).toString('hex') : null;
        if (err) out.writeError = err.message;
        resolve();
      };
      if (item.kind === 'heartbeat') {
        encoder.writeHeartbeat(id, { timeout: item.timeout || 3000 }, done);
      } else {
        const req = requestOf(item);
        out.request = {
          serverSignature: req.serverSignature,
          methodName: req.methodName,
          timeout: req.timeout,
          codecType: req.codecType,
          oneway: req.oneway,
          className: new RpcRequestCommand(req, { codecType: req.codecType, proto }).className,
          content: libraryContent(req).toString('hex'),
          headers: libraryHeaders(req).toString('hex'),
        };
        sentReqs.set(id, { req });
        encoder.writeRequest(id, req, done);
      }
    });
    results.push(written.then(() => answered).then(packet => {
      if (packet) {
        out.answer = packet.timeout ? { timeout: true } : {
          packetType: packet.packetType,
          options: packet.options,
          className: packet.className,
          data: packet.data && packet.data.appResponse && packet.data.appResponse.toObject ?
            { appResponse: packet.data.appResponse.toObject(), error: packet.data.error } :
            packet.data,
        };
      }
      emit(out);
    }));
  }
  await Promise.all(results);
  await new Promise(resolve => setTimeout(resolve, 100));
  socket.end();
  // a peer that never closes its side (a recorder) must not keep the process alive
  setTimeout(() => socket.destroy(), 200);
}

const mode = process.argv[2];
const main = {
  server: runServer,
  client: async () => {
    let input = '';
    for await (const chunk of process.stdin) input += chunk;
    await runClient(Number(process.argv[3]), JSON.parse(input));
  },
}[mode];
if (!main) {
  process.stderr.write('usage: bolt_peer.js server | client PORT < SCRIPT\n');
  process.exit(2);
}
main().catch(err => {
  process.stderr.write(String(err && err.stack || err) + '\n');
  process.exit(1);
});
