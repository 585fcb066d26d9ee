// sbx-agent's Node.js session driver: runs as `node -e <this> MARKER`.
// Requests arrive on fd 3, one JSON object per line ({"code", "cwd",
// "timeout_ms", and optionally "files" to write into the cell's directory
// first and "stdin", the text its process.stdin gives}); each reply goes to
// fd 4 as one line, after the marker has
// been written to stdout and stderr (the agent cuts each execution's output
// there). Top-level let/const/function declarations persist between calls:
// every cell runs as a script in one vm context.
'use strict';
const fs = require('fs');
const path = require('path');
const readline = require('readline');
const { Readable } = require('stream');
const util = require('util');
const vm = require('vm');

const marker = process.argv[1];
process.argv.splice(1);
process.on('SIGINT', () => {}); // interrupts are for the running cell
// A promise rejected or a callback thrown after its cell ended is reported,
// not fatal: the session and its state stay.
process.on('unhandledRejection', (e) => console.error('Unhandled rejection:', e));
process.on('uncaughtException', (e) => console.error('Uncaught exception:', e));
const sandbox = {
  require, console, process, Buffer, URL, URLSearchParams, TextEncoder, TextDecoder,
  setTimeout, clearTimeout, setInterval, clearInterval, setImmediate, clearImmediate,
  queueMicrotask, structuredClone, fetch: globalThis.fetch,
  module: { exports: {} }, __dirname: process.cwd(), __filename: '<cell>',
};
sandbox.exports = sandbox.module.exports;
sandbox.global = sandbox;
sandbox.globalThis = sandbox;
const context = vm.createContext(sandbox);
let count = 0;

const timedOut = { name: 'TimeoutError', message: 'the execution ran past its timeout' };

// The promise's value, or a throw of timedOut at the deadline.
function settle(promise, deadline, req) {
  if (!req.timeout_ms) return promise;
  let timer;
  const late = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(timedOut), Math.max(0, deadline - Date.now()));
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

async function run(req) {
  count += 1;
  const reply = { execution_count: count, status: 'ok', result: null };
  const stdinDescriptor = Object.getOwnPropertyDescriptor(process, 'stdin');
  try {
    if (req.cwd) process.chdir(req.cwd);
    // The agent has checked the names; they must still land inside.
    const base = process.cwd();
    for (const [name, content] of Object.entries(req.files || {})) {
      const target = path.resolve(base, name);
      if (!target.startsWith(base + path.sep)) throw new Error(`file name outside: ${name}`);
      fs.mkdirSync(path.dirname(target), { recursive: true });
      fs.writeFileSync(target, content ?? '');
    }
    if (typeof req.stdin === 'string') {
      const given = Readable.from([Buffer.from(req.stdin)]);
      Object.defineProperty(process, 'stdin', { configurable: true, enumerable: true,
        get: () => given });
    }
    const script = new vm.Script(req.code || '', { filename: `cell-${count}.js` });
    const deadline = Date.now() + (req.timeout_ms || 0);
    // The timeout is kept here, not by a signal from the agent: the vm stops
    // sync code at it, and a returned promise is raced against what is left.
    let value = script.runInContext(context, {
      timeout: req.timeout_ms || undefined, breakOnSigint: true,
    });
    if (value && typeof value.then === 'function') value = await settle(value, deadline, req);
    if (value !== undefined) reply.result = util.inspect(value);
  } catch (e) {
    // Errors thrown in the context come from its own realm: no instanceof.
    const err = (typeof e === 'object' && e !== null) ? e : { name: 'Error', message: String(e) };
    reply.status = err.code === 'ERR_SCRIPT_EXECUTION_TIMEOUT' || e === timedOut
      ? 'timeout' : 'error';
    reply.ename = err.name || 'Error';
    reply.evalue = err.message !== undefined ? String(err.message) : String(e);
    // The error line, then the frames of the user's cells (not the driver's).
    const frames = String(err.stack || '').split('\n').filter((l) => /^\s+at /.test(l) &&
      !/\[eval\]|node:internal|node:vm/.test(l));
    reply.traceback = [`${reply.ename}: ${reply.evalue}`, ...frames];
  } finally {
    if (stdinDescriptor) Object.defineProperty(process, 'stdin', stdinDescriptor);
  }
  return reply;
}

const lines = readline.createInterface({ input: fs.createReadStream(null, { fd: 3 }) });
let chain = Promise.resolve();
lines.on('line', (line) => {
  chain = chain.then(async () => {
    let reply;
    try {
      reply = await run(JSON.parse(line));
    } catch (e) {
      reply = { execution_count: count, status: 'error', ename: 'DriverError', evalue: String(e) };
    }
    fs.writeSync(1, marker);
    fs.writeSync(2, marker);
    fs.writeSync(4, JSON.stringify(reply) + '\n');
  });
});
lines.on('close', () => process.exit(0));
