// The whole dialer flow through a TypeScript client generated from callgate's served
// /openapi.json (openapi-typescript types + openapi-fetch), as a vendor would write it.
// Run by tests/e2e/test_generated_clients.py:
//   CALLGATE_URL=http://127.0.0.1:8000 CALLGATE_KEYS='{"admin": "...", ...}' \
//   CALLGATE_PHONES='["+13145550300", "+13145550301", "+13145550302"]' npx tsx flow.ts
// Checked with `tsc --noEmit` against the generated types first, so a field the document
// gets wrong fails at compile time, and run under Node; it prints one JSON line of results.
import assert from "node:assert/strict";
import createClient from "openapi-fetch";
import type { components, paths } from "./generated/schema";

type Role = "admin" | "campaign_manager" | "dialer" | "compliance";
type ErrorEnvelope = components["schemas"]["ErrorEnvelope"];

const baseUrl = process.env.CALLGATE_URL ?? "http://127.0.0.1:8000";
const keys = JSON.parse(process.env.CALLGATE_KEYS ?? "{}") as Record<Role, string>;
const [phoneA, phoneB, phoneNoConsent] = JSON.parse(process.env.CALLGATE_PHONES ?? "[]") as string[];
const client = createClient<paths>({ baseUrl });
const as = (role: Role) => ({ Authorization: `Bearer ${keys[role]}` });
const code = (e: ErrorEnvelope | undefined): string | undefined => e?.error.code;
const now = new Date();
const iso = (d: Date) => d.toISOString();

// Consents, written, for two numbers (the first with an Idempotency-Key, sent twice).
const consentBody: components["schemas"]["ConsentIn"] = {
  patient_ref: "MRN-TS-1",
  phone: phoneA,
  channels: ["autodialed_voice"],
  purposes: ["*"],
  method: "written",
  obtained_at: iso(new Date(now.getTime() - 86_400_000)),
  evidence_ref: "scan://consents/ts-1.pdf",
};
const idem = { "Idempotency-Key": `ts-consent-${now.getTime()}` };
const c1 = await client.POST("/v1/consents", {
  body: consentBody, headers: as("campaign_manager"), params: { header: idem },
});
assert.equal(c1.response.status, 201, JSON.stringify(c1.error));
const c1again = await client.POST("/v1/consents", {
  body: consentBody, headers: as("campaign_manager"), params: { header: idem },
});
assert.equal(c1again.response.headers.get("idempotent-replayed"), "true");
assert.equal(c1again.data?.id, c1.data?.id);
assert.ok(c1.response.headers.get("x-request-id"));
const c2 = await client.POST("/v1/consents", {
  body: { ...consentBody, phone: phoneB, patient_ref: "MRN-TS-2" }, headers: as("campaign_manager"),
});
assert.equal(c2.response.status, 201, JSON.stringify(c2.error));

// A campaign (the purpose is an enum of the catalogue).
const camp = await client.POST("/v1/campaigns", {
  body: {
    name: "TS discharge follow-up", purpose: "discharge_followup", channel: "autodialed_voice",
    provider_name: "Mercy Heart Clinic", callback_number: "+1 314 555 0199", max_attempts: 3,
  },
  headers: as("campaign_manager"),
});
assert.equal(camp.response.status, 201, JSON.stringify(camp.error));
const campaignId = camp.data!.id;

// A call list as JSON: two queued, one refused (no consent).
const list = await client.POST("/v1/campaigns/{campaign_id}/calls", {
  params: { path: { campaign_id: campaignId } },
  body: [
    { external_id: "ts-1", phone: phoneA, patient_ref: "MRN-TS-1" },
    { external_id: "ts-2", phone: phoneB, patient_ref: "MRN-TS-2" },
    { external_id: "ts-3", phone: phoneNoConsent },
  ],
  headers: as("campaign_manager"),
});
assert.equal(list.response.status, 200, JSON.stringify(list.error));
assert.deepEqual(list.data!.results.map((r) => r.status), ["queued", "queued", "refused"]);

// A lease: both calls.
const lease = await client.POST("/v1/queue/lease", {
  body: { dialer_id: "ts-dialer", limit: 10 }, headers: as("dialer"),
});
assert.equal(lease.response.status, 200, JSON.stringify(lease.error));
const tasks = lease.data!.tasks;
assert.equal(tasks.length, 2);
const taskA = tasks.find((t) => t.phone === phoneA)!;
const taskB = tasks.find((t) => t.phone === phoneB)!;

// The dial check.
const dial = await client.POST("/v1/queue/{call_id}/dial", {
  params: { path: { call_id: taskA.call_id } }, body: { lease_id: taskA.lease_id },
  headers: as("dialer"),
});
assert.equal(dial.data?.go, true, JSON.stringify(dial.error));

// The outcome without the agent's identification: the typed 422 AGENT_ID_MISSING.
const outcome = {
  lease_id: taskA.lease_id, agent_name: "Dana", disclosed_callback_number: taskA.callback_number,
  result: "connected" as const, started_at: iso(now), ended_at: iso(new Date(now.getTime() + 40_000)),
};
const missing = await client.POST("/v1/queue/{call_id}/outcome", {
  params: { path: { call_id: taskA.call_id } }, body: outcome, headers: as("dialer"),
});
assert.equal(missing.response.status, 422);
assert.equal(code(missing.error), "AGENT_ID_MISSING");
// Then complete: accepted.
const done = await client.POST("/v1/queue/{call_id}/outcome", {
  params: { path: { call_id: taskA.call_id } }, body: { ...outcome, agent_id: "A-17" },
  headers: as("dialer"),
});
assert.equal(done.response.status, 200, JSON.stringify(done.error));

// The patient behind B revokes: the leased call is withdrawn; the dial check says why.
const rev = await client.POST("/v1/consents/revocations", {
  body: { phone: phoneB, source: "letter", received_at: iso(now) }, headers: as("campaign_manager"),
});
assert.equal(rev.response.status, 201, JSON.stringify(rev.error));
assert.equal(rev.data!.withdrawn_calls, 1);
const stopped = await client.POST("/v1/queue/{call_id}/dial", {
  params: { path: { call_id: taskB.call_id } }, body: { lease_id: taskB.lease_id },
  headers: as("dialer"),
});
assert.equal(stopped.response.status, 409);
assert.equal(code(stopped.error), "CONSENT_REVOKED");

// The refusal log: the refused row at intake, the withdrawn call at dispatch.
const refusals = await client.GET("/v1/refusals", {
  params: { query: { campaign_id: campaignId } }, headers: as("compliance"),
});
assert.equal(refusals.response.status, 200, JSON.stringify(refusals.error));
const seen = refusals.data!.items.map((i) => `${i.stage}:${i.code}`).sort();
assert.deepEqual(seen, ["dispatch:CONSENT_REVOKED", "intake:NO_CONSENT"]);

// An empty lease says when to poll again.
const empty = await client.POST("/v1/queue/lease", {
  body: { dialer_id: "ts-dialer" }, headers: as("dialer"),
});
assert.equal(empty.data!.tasks.length, 0);
const retry = Number(empty.response.headers.get("retry-after"));
assert.ok(retry >= 1 && retry <= 60);

console.log(JSON.stringify({ ok: true, campaign: campaignId, refusals: seen, retry }));
