// The demo inbox end to end in headless Chromium: two agents in two browser contexts.
// Run by tests/it/browser.rs, which starts the server and passes one JSON argument:
//   { agentA: { user, link }, agentB: { user, link }, contacts: [{ id, name, unread }],
//     demoContact, inboundBody, screenshot, artifacts }
// Prints one JSON line per step; "waiting_for_inbound" asks the test (on stdin) to
// publish `inboundBody` from the demo contact. Exits 0 when every step passed.
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const config = JSON.parse(process.argv[2]);
const WAIT_MS = 5000;
const print = (event, data = {}) => console.log(JSON.stringify({ event, ...data }));
const stdin = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => stdin.once("line", resolve));

// Runs one step, failing with what was expected.
async function step(what, run) {
  const started = Date.now();
  try {
    await run();
  } catch (e) {
    throw new Error(`${what}: ${e.message.split("\n")[0]}`);
  }
  print("step", { what, ms: Date.now() - started });
}

async function visible(locator, expected) {
  try {
    await locator.first().waitFor({ state: "visible", timeout: WAIT_MS });
  } catch {
    throw new Error(`expected ${expected} within ${WAIT_MS} ms`);
  }
}

async function gone(locator, expected) {
  try {
    await locator.first().waitFor({ state: "hidden", timeout: WAIT_MS });
  } catch {
    throw new Error(`expected ${expected} within ${WAIT_MS} ms`);
  }
}

const exact = (text) => new RegExp(`^${text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`);
const contact = (page, id) => page.locator(`#contacts [data-contact="${id}"]`);
const badge = (page, id, n) => contact(page, id).locator(".badge", { hasText: exact(String(n)) });
const message = (page, body) => page.locator("#messages .message .bubble", { hasText: exact(body) });

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  timeout: 30_000,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const problems = [];
async function agentPage(agent) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 760 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  // A script error, a CSP violation or a failed request is a failure of the page.
  page.on("pageerror", (e) => problems.push(`${agent.user}: page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`${agent.user}: console error: ${m.text()}`);
  });
  page.on("requestfailed", (r) => {
    // A reload or a transport upgrade cancels requests in flight: not a failure.
    const error = r.failure()?.errorText ?? "";
    if (error !== "net::ERR_ABORTED") problems.push(`${agent.user}: request failed: ${r.url()} ${error}`);
  });
  return page;
}

const [userA, userB] = [config.agentA.user, config.agentB.user];
const demo = config.demoContact;
let a;
let b;

try {
  await step("without a token in the link, the page asks for one and signs in with it", async () => {
    const link = new URL(config.agentB.link);
    const fragment = new URLSearchParams(link.hash.slice(1));
    const page = await agentPage(config.agentB);
    await page.goto(`${link.origin}/`);
    await visible(page.locator("#sign-in-form"), "the sign-in form");
    await page.locator("#token").fill(fragment.get("token"));
    await page.locator("#workspace").fill(fragment.get("workspace"));
    await page.locator("#sign-in-form button[type=submit]").click();
    await visible(page.locator('#connection[data-state="online"]'), "connected after signing in");
    await visible(page.locator("#whoami", { hasText: exact(`Signed in as ${userB}`) }), `signed in as ${userB}`);
    await page.context().close();
  });

  a = await agentPage(config.agentA);
  b = await agentPage(config.agentB);
  await step("both agents open their link and connect", async () => {
    await Promise.all([a.goto(config.agentA.link), b.goto(config.agentB.link)]);
    await visible(a.locator('#connection[data-state="online"]'), `${userA}'s page connected`);
    await visible(b.locator('#connection[data-state="online"]'), `${userB}'s page connected`);
    for (const page of [a, b]) {
      if (page.url().includes("token=")) throw new Error(`expected the token out of the address bar, got ${page.url()}`);
    }
  });

  await step("the contact list shows every demo contact with its unread count", async () => {
    for (const page of [a, b]) {
      for (const c of config.contacts) {
        await visible(contact(page, c.id).locator(".name", { hasText: exact(c.name) }), `contact ${c.name} listed`);
        if (c.unread > 0) await visible(badge(page, c.id, c.unread), `an unread badge ${c.unread} on ${c.name}`);
      }
    }
  });

  await step("presence shows the other agent online", async () => {
    await visible(a.locator(`#presence [data-user="${userB}"]`), `${userB} online on ${userA}'s page`);
    await visible(b.locator(`#presence [data-user="${userA}"]`), `${userA} online on ${userB}'s page`);
  });

  await step("a live inbound message raises the demo contact's badge on both pages", async () => {
    print("waiting_for_inbound");
    await nextLine();
    await visible(badge(a, demo, 1), `unread badge 1 on the demo contact (${userA})`);
    await visible(badge(b, demo, 1), `unread badge 1 on the demo contact (${userB})`);
  });

  await step(`${userA} opens the conversation; it is read, and ${userB}'s badge goes`, async () => {
    await contact(a, demo).click();
    await visible(message(a, config.inboundBody), `the inbound message in ${userA}'s conversation view`);
    await gone(badge(a, demo, 1), `no unread badge on ${userA}'s page once it is open`);
    await gone(badge(b, demo, 1), `${userB}'s badge gone after ${userA} read it`);
  });

  await step(`${userB} opens the same conversation`, async () => {
    await contact(b, demo).click();
    await visible(message(b, config.inboundBody), `the inbound message in ${userB}'s view`);
  });

  const reply = "Let me check that for you.";
  await step(`${userA} types and ${userB} sees the typing indicator`, async () => {
    await a.locator("#body").pressSequentially(reply, { delay: 10 });
    await visible(b.locator("#typing", { hasText: exact(`${userA} is typing…`) }), `"${userA} is typing…" on ${userB}'s page`);
  });

  await step(`${userA} sends with Enter and ${userB} sees the message`, async () => {
    await a.locator("#body").press("Enter");
    await visible(message(b, reply), `${userA}'s reply in ${userB}'s view`);
    await visible(
      b.locator("#messages .message.outbound .who", { hasText: new RegExp(`^${userA} · `) }),
      `the reply labelled with its sender ${userA}`,
    );
    await gone(b.locator("#typing"), `the typing indicator gone on ${userB}'s page once the message came`);
    if ((await a.locator("#body").inputValue()) !== "") throw new Error("expected the send box emptied after the send");
  });

  await step(`${userB} has it in view, so ${userA} sees the read receipt`, async () => {
    await visible(a.locator("#messages .receipt", { hasText: exact(`Read by ${userB}`) }), `"Read by ${userB}" on ${userA}'s page`);
  });

  const answer = "It left our warehouse yesterday; the tracking link is on its way.";
  await step(`${userB} answers; ${userA} sees it and ${userB} sees it read`, async () => {
    await b.locator("#body").pressSequentially(answer, { delay: 2 });
    await b.locator("#body").press("Enter");
    await visible(message(a, answer), `${userB}'s answer on ${userA}'s page`);
    await visible(b.locator("#messages .receipt", { hasText: exact(`Read by ${userA}`) }), `"Read by ${userA}" on ${userB}'s page`);
  });

  const meanwhile = "You will have it by Thursday.";
  await step(`${userB}'s connection drops; what is sent meanwhile arrives once`, async () => {
    // Kill the transport without a clean disconnect: the client reconnects by itself
    // and joins with the last seq it saw.
    await b.evaluate(() => state.socket.io.engine.close());
    await a.locator("#body").fill(meanwhile);
    await a.locator("#body").press("Enter");
    await visible(message(b, meanwhile), `the message sent while ${userB} was away, after the reconnect`);
    await visible(b.locator('#connection[data-state="online"]'), `${userB} connected again`);
    await visible(a.locator("#messages .receipt", { hasText: exact(`Read by ${userB}`) }), `"Read by ${userB}" after the reconnect`);
    const copies = await message(b, meanwhile).count();
    if (copies !== 1) throw new Error(`expected the message once on ${userB}'s page, saw it ${copies} times`);
  });

  await step(`${userB} types again; ${userA} sees it`, async () => {
    await b.locator("#body").pressSequentially("Anything else I can", { delay: 10 });
    await visible(a.locator("#typing", { hasText: exact(`${userB} is typing…`) }), `"${userB} is typing…" on ${userA}'s page`);
  });

  await step("screenshot", async () => {
    await a.mouse.move(0, 0);
    await a.screenshot({ path: config.screenshot });
    await b.screenshot({ path: `${config.artifacts}/demo-inbox-agent-2.png` });
  });

  if (problems.length > 0) throw new Error(`the pages reported problems:\n${problems.join("\n")}`);
  print("done");
} catch (e) {
  await a?.screenshot({ path: `${config.artifacts}/demo-inbox-failure-a.png` }).catch(() => {});
  await b?.screenshot({ path: `${config.artifacts}/demo-inbox-failure-b.png` }).catch(() => {});
  print("failed", { error: e.message, problems });
  process.exitCode = 1;
} finally {
  stdin.close();
  await browser.close();
}
