// The seed frontend's calls, with the official socket.io-client v4:
//   io(URL, { transports: [...] }), emit('join_contact'), emit('join_workspace'),
//   on('new_message').
// Usage: node seed-flow.mjs <url> <token|-> <contactId> <workspaceId> <transport> <expected>
// Prints one JSON line per event it saw; "ready" once its joins were handled.
import { io } from "socket.io-client";

const [url, token, contactId, workspaceId, transport, expected] = process.argv.slice(2);
const want = Number(expected);
const print = (event, data) => console.log(JSON.stringify({ event, data }));

const options = { transports: [transport], reconnection: false };
if (token !== "-") options.auth = { token };
const socket = io(url, options);

const deadline = setTimeout(() => {
  print("timeout", { wanted: want });
  process.exit(2);
}, 10_000);

socket.on("connect_error", (err) => {
  print("connect_error", { message: err.message });
  clearTimeout(deadline);
  socket.close();
});

socket.on("livechat:error", (err) => print("livechat:error", err));

let received = 0;
socket.on("new_message", (message) => {
  print("new_message", message);
  received += 1;
  if (received === want) {
    clearTimeout(deadline);
    socket.close();
  }
});

socket.on("connect", async () => {
  // Exactly as the seed: joins without acks.
  socket.emit("join_contact", { contactId });
  socket.emit("join_workspace", { workspaceId });
  // Events of one socket are handled in order, so once this ack is back the joins are done.
  const page = await socket.timeout(5000).emitWithAck("history", { contactId, limit: 1 });
  print("ready", { ok: page.ok, transport: socket.io.engine.transport.name });
});
