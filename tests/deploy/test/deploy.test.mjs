// The repository's deploy files, checked offline: compose, Dockerfiles,
// both kustomize overlays (render, Kubernetes schemas, consistency with what
// the services' sources read and listen on).
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { readServices } from "../lib/sources.mjs";
import { OVERLAYS, checkCompose, checkDockerfiles, checkManifests, composeConfig, render, validateSchemas } from "../lib/check.mjs";

const root = join(import.meta.dirname, "../../..");
const services = readServices(root);

test("the sources give every service, its variables and ports", () => {
  const by = Object.fromEntries(services.map((s) => [s.name, s]));
  for (const n of ["tenants", "billing", "agents", "messaging", "analytics"]) {
    assert.equal(by[n]?.kind, "rpc", n);
    assert.ok(by[n].ports.rpc > 0 && by[n].ports.ops > 0, n);
    for (const v of ["PARLEY_LISTEN", "PARLEY_OPS_PORT", "PARLEY_SERVICE_SECRET", "PARLEY_DATABASE_URL", `PARLEY_${n.toUpperCase()}_DATABASE_URL`]) assert.ok(by[n].vars.has(v), `${n} ${v}`);
  }
  assert.equal(by.gateway?.kind, "http");
  assert.equal(by.gateway.ports.http, 8080);
  assert.deepEqual(by.gateway.calls, ["agents", "analytics", "billing", "messaging", "tenants"]);
  assert.equal(by.import?.kind, "cli");
  assert.ok(by.messaging.vars.has("PARLEY_MESSAGING_CAMPAIGN_SENDERS"), "getenv() variables count too");
  assert.ok(by.tenants.vars.get("PARLEY_CREDENTIALS_KEY").secret);
});

test("docker-compose.yml configures every service as its sources say", () => {
  assert.deepEqual(checkCompose(root, services), []);
});

test("docker-compose config -q accepts docker-compose.yml", () => {
  assert.deepEqual(composeConfig(root), []);
});

test("the Dockerfiles pass dockerfile-utils lint and the image policy", () => {
  assert.deepEqual(checkDockerfiles(root, services), []);
});

for (const o of OVERLAYS) {
  test(`overlay ${o}: renders, validates against the Kubernetes schemas, matches the services`, async () => {
    const objs = render(root, o);
    assert.ok(objs.length > 30, `only ${objs.length} objects`);
    assert.deepEqual(await validateSchemas(objs, o), []);
    assert.deepEqual(checkManifests(objs, o, services), []);
  });
}
