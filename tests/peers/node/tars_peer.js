'use strict';
/*
 * Real TARS peers for protoc-x's tests (driven by tests/peers/tars_peers.py), written with
 * TarsNode: @tars/rpc (server and client) and @tars/stream (the TLV encoding of the arguments).
 * The interface is what tars2node would generate for
 *
 *     module Test { interface Hello { string sayHello(string s); }; };
 *
 * written out by hand below (no .tars file, no code generator).
 *
 *   node tars_peer.js server PORT          @tars/rpc's server with servant Test.Hello.HelloObj
 *                                          on 127.0.0.1:PORT: sayHello(s) returns "hello " + s,
 *                                          tars_ping answers int32 0 (as tars2node's code does).
 *                                          Prints {"event":"listening","port":N}, then one JSON
 *                                          line per call it served (request id, servant,
 *                                          function, argument); exits when stdin closes.
 *   node tars_peer.js client HOST PORT TEXT...
 *                                          @tars/rpc's client calls sayHello(TEXT) for every TEXT
 *                                          at once (pipelined on one connection) and prints one
 *                                          JSON line per call: request id, argument, result or
 *                                          error. Exits 0 when every call was answered.
 */

const net = require('net');
const TarsStream = require('@tars/stream');
const Tars = require('@tars/rpc');
const TarsError = Tars.error;

const LOOPBACK = '127.0.0.1';
const SERVANT = 'Test.Hello.HelloObj';

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// --- server --------------------------------------------------------------------------------

function HelloImp() {}

HelloImp.prototype.initialize = function () {};

HelloImp.prototype.onDispatch = function (current, funcName, binBuffer) {
  if (funcName === 'tars_ping') {
    // what tars2node generates for every servant: int32 0 at tag 0
    emit({ event: 'ping', id: current.getRequestId() });
    const out = new TarsStream.TarsOutputStream();
    out.writeInt32(0, 0);
    current.doResponse(out.getBinBuffer());
    return TarsError.SUCCESS;
  }
  if (funcName !== 'sayHello') return TarsError.SERVER.FUNC_NOT_FOUND;
  const input = new TarsStream.TarsInputStream(binBuffer);
  const s = input.readString(1, true);
  emit({
    event: 'request',
    id: current.getRequestId(),
    servant: current.getRequest().sServantName,
    func: funcName,
    arg: s,
  });
  const out = new TarsStream.TarsOutputStream();
  out.writeString(0, 'hello ' + s);
  current.doResponse(out.getBinBuffer());
  return TarsError.SUCCESS;
};

function server(port) {
  const svr = Tars.server.createServer(HelloImp);
  svr.start({
    servant: SERVANT,
    endpoint: `tcp -h ${LOOPBACK} -p ${port} -t 60000`,
    protocol: 'tars',
  });
  waitListening(port, () => emit({ event: 'listening', port }));
  process.stdin.resume();
  process.stdin.on('end', () => {
    svr.stop();
    process.exit(0);
  });
}

function waitListening(port, done) {
  const probe = net.connect(port, LOOPBACK);
  probe.on('connect', () => {
    probe.destroy();
    done();
  });
  probe.on('error', () => setTimeout(() => waitListening(port, done), 20));
}

// --- client --------------------------------------------------------------------------------

function HelloProxy() {
  this._name = undefined;
  this._worker = undefined;
}

HelloProxy.prototype.setTimeout = function (timeout) {
  this._worker.timeout = timeout;
};

HelloProxy.prototype.getTimeout = function () {
  return this._worker.timeout;
};

HelloProxy.prototype.sayHello = function (s) {
  const out = new TarsStream.TarsOutputStream();
  out.writeString(1, s);
  const requestId = data => (data.request.request || data.request).iRequestId;
  const decode = data => {
    const input = new TarsStream.TarsInputStream(data.response.sBuffer);
    return {
      id: requestId(data),
      value: input.readString(0, true, TarsStream.String),
    };
  };
  const fail = data => {
    throw { id: requestId(data), error: data.error };
  };
  return this._worker.tars_invoke('sayHello', out.getBinBuffer()).then(decode, fail);
};

function client(host, port, texts) {
  const comm = Tars.client;
  comm.setProperty('timeout', 5000);
  const prx = comm.stringToProxy(HelloProxy, `${SERVANT}@tcp -h ${host} -p ${port} -t 60000`);
  let failed = 0;
  const calls = texts.map(text =>
    prx.sayHello(text).then(
      got => emit({ id: got.id, arg: text, result: got.value }),
      err => {
        failed += 1;
        const error = err && err.error ? err.error : { message: String(err) };
        emit({ id: err && err.id, arg: text, error: { code: error.code, message: error.message } });
      }
    )
  );
  Promise.all(calls).then(() => {
    comm.disconnect && comm.disconnect();
    process.exit(failed ? 1 : 0);
  });
}

const [mode, ...args] = process.argv.slice(2);
if (mode === 'server') {
  server(Number(args[0]));
} else if (mode === 'client') {
  client(args[0], Number(args[1]), args.slice(2));
} else {
  process.stderr.write('usage: node tars_peer.js server PORT | client HOST PORT TEXT...\n');
  process.exit(2);
}
