// One kafkajs consumer group member in its own process, for tests/e2e/test_groups_kafkajs.py.
// Same contract and log format as tests/e2e/groups_worker.py:
//
//   node groups_worker.js --bootstrap HOST:PORT --group G --topic T --log FILE [--name N] [--session-ms 6000]
//
//   <unix time> S kafkajs | A p,p | V p,p | P <p> <offset> | I <p> <offset> | C <p> <offset> | F <p> <offset> <e> | E
//
// Each batch is processed (logged) and then committed synchronously (commitOffsets) before the
// next one; auto-commit is off.
'use strict'

const fs = require('fs')
const { Kafka, logLevel } = require('kafkajs')

function args () {
  const out = { sessionMs: 6000, name: 'w' }
  const a = process.argv.slice(2)
  for (let i = 0; i < a.length; i += 2) {
    const k = a[i]; const v = a[i + 1]
    if (k === '--bootstrap') out.bootstrap = v
    else if (k === '--group') out.group = v
    else if (k === '--topic') out.topic = v
    else if (k === '--log') out.log = v
    else if (k === '--name') out.name = v
    else if (k === '--session-ms') out.sessionMs = parseInt(v, 10)
    else throw new Error(`unknown argument ${k}`)
  }
  return out
}

const a = args()
const fd = fs.openSync(a.log, 'a')
function log (...parts) {
  fs.writeSync(fd, `${(Date.now() / 1000).toFixed(6)} ${parts.join(' ')}\n`)
}
const partsStr = (ps) => (ps.length ? [...ps].sort((x, y) => x - y).join(',') : '-')

async function main () {
  const kafka = new Kafka({ clientId: `kafkajs-${a.name}`, brokers: [a.bootstrap], logLevel: logLevel.WARN, retry: { retries: 20 } })
  const consumer = kafka.consumer({
    groupId: a.group,
    sessionTimeout: a.sessionMs,
    heartbeatInterval: 1000,
    rebalanceTimeout: 20000,
    metadataMaxAge: 2000,
    allowAutoTopicCreation: false
  })
  const { GROUP_JOIN, CRASH } = consumer.events
  consumer.on(GROUP_JOIN, (e) => {
    const mine = (e.payload.memberAssignment[a.topic] || [])
    log('A', partsStr(mine))
  })
  consumer.on(CRASH, (e) => log('X', String(e.payload.error && e.payload.error.type).replace(/\s+/g, '_')))
  let stopping = false
  const stop = async () => {
    if (stopping) return
    stopping = true
    try { await consumer.disconnect() } catch (_) {}
    log('E')
    fs.closeSync(fd)
    process.exit(0)
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)

  log('S', 'kafkajs')
  await consumer.connect()
  await consumer.subscribe({ topics: [a.topic], fromBeginning: true })
  await consumer.run({
    autoCommit: false,
    eachBatchAutoResolve: false,
    eachBatch: async ({ batch, resolveOffset, isRunning, isStale }) => {
      if (!isRunning() || isStale() || batch.messages.length === 0) return
      const p = batch.partition
      let next = null
      for (const m of batch.messages) {
        log('P', p, m.offset)
        resolveOffset(m.offset)
        next = BigInt(m.offset) + 1n
      }
      log('I', p, next.toString())
      try {
        await consumer.commitOffsets([{ topic: a.topic, partition: p, offset: next.toString() }])
        log('C', p, next.toString())
      } catch (e) {
        log('F', p, next.toString(), String(e.type || e.name).replace(/\s+/g, '_'))
        throw e
      }
    }
  })
}

main().catch((e) => {
  log('X', String(e && e.message).replace(/\s+/g, '_'))
  process.exit(1)
})
