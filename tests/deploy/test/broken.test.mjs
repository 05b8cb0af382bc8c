// The checks catch what they are for: each test breaks one thing (in a copy
// of the repository's files, or in a rendered copy) and expects the problem.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readServices } from "../lib/sources.mjs";
import { checkCompose, checkDockerfiles, checkManifests, composeConfig, render, validateSchemas } from "../lib/check.mjs";

const repo = join(import.meta.dirname, "../../..");
let root;
let prod; // the rendered prod overlay, cloned per test
let services;

// A copy of what the checks read: the services' sources, common's config
// table, deploy/, the compose file and .env.example.
function copyRepo() {
  const dst = mkdtempSync(join(tmpdir(), "parley-deploy-check-"));
  for (const svc of readdirSync(join(repo, "services"))) {
    const from = join(repo, "services", svc);
    mkdirSync(join(dst, "services", svc), { recursive: true });
    for (const f of readdirSync(from)) if (f.endsWith(".c") || f === "CMakeLists.txt") cpSync(join(from, f), join(dst, "services", svc, f));
  }
  mkdirSync(join(dst, "common/src"), { recursive: true });
  cpSync(join(repo, "common/src/service.c"), join(dst, "common/src/service.c"));
  cpSync(join(repo, "deploy"), join(dst, "deploy"), { recursive: true });
  for (const f of ["docker-compose.yml", ".env.example"]) cpSync(join(repo, f), join(dst, f));
  return dst;
}
const edit = (f, fn) => writeFileSync(join(root, f), fn(readFileSync(join(root, f), "utf8")));
const has = (problems, re) => assert.ok(problems.some((p) => re.test(p)), `expected a problem matching ${re}, got:\n${problems.join("\n") || "(none)"}`);
const clone = () => structuredClone(prod);
const find = (objs, kind, name) => objs.find((o) => o.kind === kind && o.metadata.name === name);

before(() => {
  root = copyRepo();
  services = readServices(root);
  prod = render(root, "prod");
  assert.deepEqual(checkManifests(prod, "prod", services), [], "the copy starts clean");
});
after(() => rmSync(root, { recursive: true, force: true }));

test("a broken manifest rendered by kustomize fails the schemas and the policy", async () => {
  const dir = join(root, "deploy/k8s/overlays/dev");
  edit("deploy/k8s/overlays/dev/kustomization.yaml", (t) =>
    t.replace(
      "patches:\n",
      `patches:
  - target: { kind: Deployment, name: messaging }
    patch: |-
      - op: add
        path: /spec/replicas
        value: "two"
      - op: replace
        path: /spec/template/spec/containers/0/securityContext/readOnlyRootFilesystem
        value: false
`,
    ),
  );
  try {
    const objs = render(root, "dev");
    has(await validateSchemas(objs, "dev"), /Deployment\/messaging: .*replicas must be integer/);
    const p = checkManifests(objs, "dev", services);
    has(p, /messaging: readOnlyRootFilesystem must be true/);
    has(p, /messaging: spec.replicas is set/);
  } finally {
    cpSync(join(repo, "deploy/k8s/overlays/dev/kustomization.yaml"), join(dir, "kustomization.yaml"));
  }
});

test("a service without its manifests fails", () => {
  edit("deploy/k8s/base/kustomization.yaml", (t) => t.replace("  - messaging.yaml\n", ""));
  try {
    const p = checkManifests(render(root, "prod"), "prod", services);
    has(p, /no Deployment messaging/);
    has(p, /PARLEY_MESSAGING_URL: no Service messaging/);
  } finally {
    cpSync(join(repo, "deploy/k8s/base/kustomization.yaml"), join(root, "deploy/k8s/base/kustomization.yaml"));
  }
});

test("a new service in services/ without compose and manifests fails", () => {
  mkdirSync(join(root, "services/quotes"));
  writeFileSync(join(root, "services/quotes/CMakeLists.txt"), "parley_service(quotes)\n");
  writeFileSync(
    join(root, "services/quotes/handlers.c"),
    `static const pl_cfg_entry cfg[] = {
	{ "PARLEY_QUOTES_MAX", PL_CFG_INT, "10", 1, 100, &cfg_max, "x" },
};
const pl_service_def quotes_service_def = {
	.default_listen = "tcp://127.0.0.1:7106",
	.default_ops_port = 9106,
};
`,
  );
  try {
    const s = readServices(root);
    has(checkCompose(root, s), /compose: no service quotes/);
    has(checkManifests(clone(), "prod", s), /no Deployment quotes/);
    has(checkManifests(clone(), "prod", s), /no migration Job container runs parley-quotes --migrate/);
    // The Dockerfile builds parley-<d> for every services/<d>/: nothing to add.
    assert.deepEqual(checkDockerfiles(root, s), []);
  } finally {
    rmSync(join(root, "services/quotes"), { recursive: true });
  }
});

test("a variable a service starts reading must be configured", () => {
  edit("services/billing/handlers.c", (t) => t.replace('{ "PARLEY_BILLING_GRACE_DAYS"', '{ "PARLEY_BILLING_NEW_KNOB", PL_CFG_INT, "1", 0, 9, NULL, "x" },\n\t{ "PARLEY_BILLING_GRACE_DAYS"'));
  try {
    const s = readServices(root);
    has(checkCompose(root, s), /compose billing: does not set PARLEY_BILLING_NEW_KNOB/);
    has(checkManifests(clone(), "prod", s), /Deployment billing: does not set PARLEY_BILLING_NEW_KNOB/);
  } finally {
    cpSync(join(repo, "services/billing/handlers.c"), join(root, "services/billing/handlers.c"));
  }
});

test("missing, unknown and misplaced variables in the manifests fail", () => {
  let o = clone();
  delete find(o, "ConfigMap", "parley-messaging").data.PARLEY_MESSAGING_LEASE;
  has(checkManifests(o, "prod", services), /Deployment messaging: does not set PARLEY_MESSAGING_LEASE/);

  o = clone();
  find(o, "ConfigMap", "parley-gateway").data.PARLEY_GATEWAY_TYPO = "1";
  has(checkManifests(o, "prod", services), /Deployment gateway: sets PARLEY_GATEWAY_TYPO, which parley-gateway does not read/);

  o = clone();
  const c = find(o, "Deployment", "tenants").spec.template.spec.containers[0];
  c.env = c.env.filter((e) => e.name !== "PARLEY_CREDENTIALS_KEY");
  find(o, "ConfigMap", "parley-tenants").data.PARLEY_CREDENTIALS_KEY = "aGVsbG8=";
  has(checkManifests(o, "prod", services), /PARLEY_CREDENTIALS_KEY is a secret and must come from a Secret/);

  o = clone();
  const a = find(o, "Deployment", "agents").spec.template.spec.containers[0];
  a.env.find((e) => e.name === "PARLEY_AGENTS_DATABASE_URL").valueFrom.secretKeyRef.key = "tenants";
  has(checkManifests(o, "prod", services), /PARLEY_AGENTS_DATABASE_URL must use key agents of parley-db/);
});

test("ports that disagree with the sources fail", () => {
  let o = clone();
  find(o, "Service", "analytics").spec.ports[0].port = 7200;
  const p = checkManifests(o, "prod", services);
  has(p, /Service analytics: port rpc must be 7105/);
  has(p, /PARLEY_ANALYTICS_URL: no Service analytics on port 7105/);

  o = clone();
  find(o, "ConfigMap", "parley-billing").data.PARLEY_OPS_PORT = "9999";
  has(checkManifests(o, "prod", services), /Deployment billing: PARLEY_OPS_PORT must be 9102/);

  o = clone();
  find(o, "Deployment", "agents").spec.template.spec.containers[0].readinessProbe.httpGet.path = "/healthz";
  has(checkManifests(o, "prod", services), /Deployment agents: readiness must GET \/readyz/);
});

test("network policies, autoscalers, budgets, the Job and the Ingress are required", () => {
  let o = clone();
  const np = find(o, "NetworkPolicy", "billing");
  np.spec.ingress[0].from = np.spec.ingress[0].from.filter((f) => f.podSelector?.matchLabels["app.kubernetes.io/name"] !== "agents");
  has(checkManifests(o, "prod", services), /NetworkPolicy: billing port rpc admits \[gateway, import, messaging, tenants\], its callers are \[agents, gateway, import, messaging, tenants\]/);

  o = clone();
  find(o, "NetworkPolicy", "tenants").spec.ingress[0].from.push({ ipBlock: { cidr: "0.0.0.0/0" } });
  has(checkManifests(o, "prod", services), /tenants port rpc is open to any pod or address/);

  o = clone().filter((x) => !(x.kind === "NetworkPolicy" && x.metadata.name === "default-deny-ingress"));
  has(checkManifests(o, "prod", services), /no default-deny ingress NetworkPolicy/);

  o = clone().filter((x) => !(x.kind === "HorizontalPodAutoscaler" && x.metadata.name === "agents"));
  has(checkManifests(o, "prod", services), /no HorizontalPodAutoscaler for Deployment agents/);

  o = clone().filter((x) => !(x.kind === "PodDisruptionBudget" && x.metadata.name === "gateway"));
  has(checkManifests(o, "prod", services), /no PodDisruptionBudget for gateway/);

  o = clone();
  const job = find(o, "Job", "parley-migrate");
  job.spec.template.spec.containers = job.spec.template.spec.containers.filter((c) => c.name !== "analytics");
  has(checkManifests(o, "prod", services), /no migration Job container runs parley-analytics --migrate/);

  o = clone().filter((x) => x.kind !== "Ingress");
  has(checkManifests(o, "prod", services), /no Ingress routes to gateway/);

  o = clone();
  find(o, "NetworkPolicy", "parley-db").spec.ingress[0].from.push({ podSelector: {} });
  has(checkManifests(o, "prod", services), /NetworkPolicy parley-db: PostgreSQL admits/);
});

test("schema validation rejects wrong types and unknown kinds", async () => {
  const o = clone();
  find(o, "HorizontalPodAutoscaler", "gateway").spec.maxReplicas = "ten";
  find(o, "Service", "billing").spec.ports[0].port = "7102";
  o.push({ apiVersion: "apps/v1", kind: "Deploymnet", metadata: { name: "x" } });
  find(o, "Cluster", "parley-db").spec.instances = "3";
  const p = await validateSchemas(o, "prod");
  has(p, /HorizontalPodAutoscaler\/gateway: .*maxReplicas must be integer/);
  has(p, /Service\/billing: .*port must be integer/);
  has(p, /Deploymnet\/x: no Kubernetes schema/);
  has(p, /Cluster\/parley-db: spec.instances must be a positive integer/);
});

test("a broken compose file fails", () => {
  const orig = readFileSync(join(root, "docker-compose.yml"), "utf8");
  try {
    edit("docker-compose.yml", (t) => t.replace("      PARLEY_MESSAGING_LEASE: 60s\n", "").replace("PARLEY_BILLING_GRACE_DAYS", "PARLEY_BILLING_GRACE_DAY"));
    let p = checkCompose(root, services);
    has(p, /compose messaging: does not set PARLEY_MESSAGING_LEASE/);
    has(p, /compose billing: sets PARLEY_BILLING_GRACE_DAY, which parley-billing does not read/);
    writeFileSync(join(root, "docker-compose.yml"), orig.replace("PARLEY_SERVICE_SECRET: ${PARLEY_SERVICE_SECRET:?", "PARLEY_SERVICE_SECRET: literal-secret-0123456789 #"));
    has(checkCompose(root, services), /PARLEY_SERVICE_SECRET is a secret and must come from .env/);
    writeFileSync(join(root, "docker-compose.yml"), orig.replace("${PARLEY_CORS_ORIGINS}", "${PARLEY_CORS_ORIGINS:-}"));
    has(checkCompose(root, services), /write \$\{PARLEY_CORS_ORIGINS\}, not \$\{PARLEY_CORS_ORIGINS:-\}/);
    writeFileSync(join(root, "docker-compose.yml"), orig.replace("    healthcheck:\n      test:", "    healthcheck:\n      tests:"));
    has(composeConfig(root), /docker-compose config: .*healthcheck/s);
  } finally {
    writeFileSync(join(root, "docker-compose.yml"), orig);
  }
});

test("a broken Dockerfile fails the linter and the image policy", () => {
  const orig = readFileSync(join(root, "deploy/Dockerfile"), "utf8");
  try {
    edit("deploy/Dockerfile", (t) => t.replace("USER 10001:10001", "USER root").replace("STOPSIGNAL SIGTERM", "STOPSIGNAL SIGTERM\nEXPOSE http"));
    const p = checkDockerfiles(root, services);
    has(p, /deploy\/Dockerfile:\d+: .*(port|Port).*\(dockerfile-utils\)/);
    has(p, /deploy\/Dockerfile: the last USER must not be root/);
  } finally {
    writeFileSync(join(root, "deploy/Dockerfile"), orig);
  }
});
