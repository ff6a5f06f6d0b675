// The `openai` Node SDK, unmodified, against one base URL: runs one named
// scenario and prints {transcript, bodies, routes} as JSON on stdout for
// tests/clients/py/check_node.py, which holds the assertions.
// Usage: node check_openai.mjs SCENARIO BASE_URL   (SCENARIO: MODE:KIND,
// MODE = json | stream, KIND = chat | tools | e400 | e429)
import OpenAI from "openai";

const [scenario, baseURL] = process.argv.slice(2);
const [mode, kind] = scenario.split(":");
const stream = mode === "stream";

const bodies = [];
const routes = [];
// A fetch wrapper records what the SDK really sent and the route tether chose.
async function recordingFetch(url, init) {
  const post = String(init?.method).toUpperCase() === "POST" && String(url).endsWith("/responses");
  if (post) bodies.push(JSON.parse(init.body));
  const res = await fetch(url, init);
  if (post) routes.push(res.headers.get("x-tether-route"));
  return res;
}

const client = new OpenAI({ baseURL, apiKey: "sk-clients-test", maxRetries: 0, fetch: recordingFetch });

const TOOLS = ["run_shell", "read_file"].map((name) => ({
  type: "function",
  name,
  description: `${name} tool`,
  parameters: { type: "object", properties: { cmd: { type: "string" } }, required: ["cmd"] },
}));

async function call(params) {
  if (!stream) return client.responses.create(params);
  let text = "";
  let final = null;
  for await (const event of await client.responses.create({ ...params, stream: true })) {
    if (event.type === "response.output_text.delta") text += event.delta;
    if (event.type === "response.completed") final = event.response;
  }
  if (!final) throw new Error("stream ended without response.completed");
  const finalText = final.output.filter((i) => i.type === "message").flatMap((i) => i.content.map((c) => c.text)).join("");
  if (text !== finalText) throw new Error("text deltas do not add up to the final text");
  return final;
}

function describe(resp) {
  return resp.output.map((item) =>
    item.type === "function_call"
      ? ["call", item.name, item.call_id, item.arguments]
      : ["text", item.content.map((c) => c.text).join("")],
  );
}

async function chat() {
  const history = [{ role: "user", content: "Say something about sockets." }];
  const transcript = [];
  for (const followUp of ["And about tokio?", "Thanks. One more line?"]) {
    const resp = await call({
      model: "gpt-5", instructions: "Be brief.", input: history,
      metadata: { emulator_script: "tools=0,answer=120" },
    });
    transcript.push(describe(resp));
    history.push(...resp.output, { role: "user", content: followUp });
  }
  return transcript;
}

async function tools() {
  const history = [{ role: "user", content: "Look around the repository." }];
  const transcript = [];
  for (;;) {
    const resp = await call({
      model: "gpt-5", instructions: "You are a coding agent.", input: history, tools: TOOLS,
      metadata: { emulator_script: "tools=4,args=80" },
    });
    transcript.push(describe(resp));
    history.push(...resp.output);
    const calls = resp.output.filter((i) => i.type === "function_call");
    if (calls.length === 0) return transcript;
    for (const c of calls) {
      const cmd = JSON.parse(c.arguments).cmd;
      history.push({ type: "function_call_output", call_id: c.call_id, output: `${c.name}: ${cmd.split(" ").length} words` });
    }
  }
}

async function error(metadata, Expected) {
  try {
    await call({ model: "gpt-5", input: "hi", metadata });
  } catch (e) {
    if (!(e instanceof Expected)) throw e;
    return [e.constructor.name, e.status, e.code, e.type, e.message];
  }
  throw new Error(`no ${Expected.name} thrown`);
}

const scenarios = {
  chat,
  tools,
  e400: () => error({ emulator_script: "no_such_knob=1" }, OpenAI.BadRequestError),
  e429: () => error({ emulator_fault: "rate_limit" }, OpenAI.RateLimitError),
};

const transcript = await scenarios[kind]();
process.stdout.write(JSON.stringify({ transcript, bodies, routes }));
