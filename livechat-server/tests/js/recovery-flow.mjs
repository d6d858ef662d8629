// The README's reconnect snippet with the official socket.io-client: the transport is
// dropped mid-stream, the client reconnects by itself and joins with its last seq.
// Usage: node recovery-flow.mjs <url> <token> <workspaceId> <total> [<start>]
// `start`: the workspace's last seq before the test publishes (its demo messages).
import { io } from "socket.io-client";

const [url, token, workspaceId, total, start = "0"] = process.argv.slice(2);
const print = (event, data) => console.log(JSON.stringify({ event, data }));
const socket = io(url, { transports: ["websocket"], auth: { token }, reconnectionDelay: 100 });

const deadline = setTimeout(() => {
  print("timeout", { lastSeq });
  process.exit(2);
}, 15_000);

let lastSeq = Number(start);
let connects = 0;
let dropped = false;
const seen = [];

socket.on("new_message", (m) => {
  lastSeq = m.seq;
  seen.push(m.seq);
  if (seen.length === 5 && !dropped) {
    dropped = true;
    // Kill the transport without a clean disconnect: the client reconnects by itself.
    socket.io.engine.close();
  }
  if (m.seq === Number(total)) {
    print("done", { seen, connects });
    clearTimeout(deadline);
    socket.close();
  }
});

socket.on("connect", () => {
  connects += 1;
  socket.emit("join_workspace", { workspaceId, after: lastSeq });
});

socket.on("livechat:recovery", (r) => {
  print("recovery", r);
  if (connects === 1) print("ready", {});
});
