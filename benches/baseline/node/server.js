// The seed's backend, as the baseline livechat is measured against: Node.js with
// socket.io 4.8. join_contact / join_workspace / send_message with an ack, and
// new_message to the contact room and the workspace room. As in the seed, the hot
// path does not wait for storage: the message is acknowledged and broadcast at once.
// The seed looks a contact's workspace up in its database; here a map filled by the
// joins stands in for that lookup (cheaper than a query, so it favours the baseline).
'use strict';

const { createServer } = require('node:http');
const { randomUUID } = require('node:crypto');
const { Server } = require('socket.io');

const port = Number(process.env.PORT || 3100);
const httpServer = createServer();
const io = new Server(httpServer, { cors: { origin: '*' } });

const workspaceOfContact = new Map();
let seq = 0;

io.on('connection', (socket) => {
  let workspace = null;

  socket.on('join_workspace', (payload, ack) => {
    const workspaceId = payload && payload.workspaceId;
    socket.join(workspaceId);
    workspace = workspaceId;
    if (typeof ack === 'function') ack({ ok: true, data: { room: workspaceId } });
  });

  socket.on('join_contact', (payload, ack) => {
    const contactId = payload && payload.contactId;
    socket.join(`contact:${contactId}`);
    if (workspace) workspaceOfContact.set(contactId, workspace);
    if (typeof ack === 'function') ack({ ok: true, data: { room: `contact:${contactId}` } });
  });

  socket.on('send_message', (payload, ack) => {
    const { contactId, body, clientId, msgType, direction } = payload || {};
    const workspaceId = workspaceOfContact.get(contactId) || null;
    seq += 1;
    const message = {
      id: randomUUID(),
      contact_id: contactId,
      workspace_id: workspaceId,
      sender: null,
      body,
      is_read: false,
      direction: direction || 'outbound',
      status: 'sent',
      twilio_sid: null,
      msg_type: msgType || 'text',
      created_at: new Date().toISOString(),
      seq,
      client_id: clientId || null,
    };
    const rooms = [`contact:${contactId}`];
    if (workspaceId) rooms.push(workspaceId);
    io.to(rooms).emit('new_message', message);
    if (typeof ack === 'function') ack({ ok: true, data: message });
  });
});

httpServer.listen(port, '127.0.0.1', () => {
  console.log(`node baseline listening on http://127.0.0.1:${port}`);
});
