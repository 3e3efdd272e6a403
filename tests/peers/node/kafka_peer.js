'use strict';
/*
 * A real Kafka client for protoc-x's tests (driven by tests/peers/kafka_peers.py): kafkajs
 * 2.2.4's producer.
 *
 *   node kafka_peer.js produce PORT CLIENT_ID TOPIC < MESSAGES
 *       connects to the bootstrap broker 127.0.0.1:PORT, sends the JSON list MESSAGES
 *       ([{key, value}], strings) to TOPIC with acks 1 in one send(), and prints one JSON line
 *       per request kafkajs reports (its REQUEST instrumentation event: broker, clientId,
 *       correlationId, size, apiName, apiKey, apiVersion), then {"event":"sent","result":...}
 *       with the record metadata kafkajs read from the Produce answer. Exits 0 on success.
 */

const { Kafka, logLevel } = require('kafkajs');

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

async function produce(port, clientId, topic, messages) {
  const kafka = new Kafka({
    clientId,
    brokers: [`127.0.0.1:${port}`],
    logLevel: logLevel.NOTHING,
    retry: { retries: 0 },
    connectionTimeout: 3000,
    requestTimeout: 5000,
  });
  const producer = kafka.producer({ allowAutoTopicCreation: false, idempotent: false });
  producer.on(producer.events.REQUEST, ({ payload }) => {
    emit({
      event: 'request',
      broker: payload.broker,
      clientId: payload.clientId,
      correlationId: payload.correlationId,
      size: payload.size,
      apiName: payload.apiName,
      apiKey: payload.apiKey,
      apiVersion: payload.apiVersion,
    });
  });
  await producer.connect();
  const result = await producer.send({ topic, acks: 1, messages });
  emit({ event: 'sent', result });
  await producer.disconnect();
}

async function main() {
  const [mode, port, clientId, topic] = process.argv.slice(2);
  if (mode !== 'produce') {
    process.stderr.write('usage: kafka_peer.js produce PORT CLIENT_ID TOPIC < MESSAGES\n');
    process.exit(2);
  }
  let input = '';
  for await (const chunk of process.stdin) input += chunk;
  await produce(Number(port), clientId, topic, JSON.parse(input));
}

main().catch(err => {
  process.stderr.write(String(err && err.stack || err) + '\n');
  process.exit(1);
});
