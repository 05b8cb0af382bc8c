// The offline checks of deploy/: each returns a list of problems (strings),
// empty when all is well. A root argument everywhere, so tests can run them
// on a deliberately broken copy of the repository.
import { execFileSync } from "node:child_process";
import { readFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { parse, parseAllDocuments } from "yaml";
import { validate as lintDockerfile } from "dockerfile-utils";
import { readServices } from "./sources.mjs";

export const OVERLAYS = ["dev", "prod"];
// Secrets that deployments create out of band (deploy/README.md): a
// reference to one of these need not resolve in the render.
const EXTERNAL_SECRETS = new Map([
  ["parley-secrets", ["service-secret", "credentials-key", "credentials-old-keys", "payment-webhook-secret"]],
  ["parley-db", null], // one key per service, checked against the services
]);
const NAME = "app.kubernetes.io/name";

// ---------------------------------------------------------------- kustomize
export function render(root, overlay) {
  const dir = join(root, "deploy/k8s/overlays", overlay);
  const out = execFileSync("kubectl", ["kustomize", dir], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  const docs = parseAllDocuments(out);
  const objs = [];
  for (const d of docs) {
    if (d.errors.length) throw new Error(`${overlay}: ${d.errors[0].message}`);
    const o = d.toJS();
    if (o) objs.push(o);
  }
  return objs;
}

// ---------------------------------------------------------------- schemas
const modelCache = new Map();
async function model(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : [null, apiVersion];
  const path = group ? `kubernetes-models/${group}/${version}/${kind}` : `kubernetes-models/${version}/${kind}`;
  if (!modelCache.has(path)) {
    try {
      const m = await import(path);
      modelCache.set(path, m[kind]);
    } catch {
      modelCache.set(path, null);
    }
  }
  return modelCache.get(path);
}

// CloudNativePG's Cluster has no model in kubernetes-models: check the
// fields the example relies on by hand.
function checkCnpgCluster(o) {
  const p = [];
  const s = o.spec || {};
  if (!Number.isInteger(s.instances) || s.instances < 1) p.push("spec.instances must be a positive integer");
  if (!s.storage || typeof s.storage.size !== "string") p.push("spec.storage.size must be set");
  if (s.imageName !== undefined && typeof s.imageName !== "string") p.push("spec.imageName must be a string");
  for (const r of s.managed?.roles || []) {
    if (typeof r.name !== "string") p.push("spec.managed.roles[].name must be a string");
    if (r.passwordSecret && typeof r.passwordSecret.name !== "string") p.push(`role ${r.name}: passwordSecret.name must be a string`);
  }
  const sql = s.bootstrap?.initdb?.postInitApplicationSQL;
  if (sql !== undefined && !(Array.isArray(sql) && sql.every((x) => typeof x === "string"))) p.push("postInitApplicationSQL must be a list of strings");
  return p;
}

export async function validateSchemas(objs, where) {
  const problems = [];
  for (const o of objs) {
    const id = `${where}: ${o.kind}/${o.metadata?.name}`;
    if (!o.apiVersion || !o.kind || !o.metadata?.name) {
      problems.push(`${id}: apiVersion, kind and metadata.name are required`);
      continue;
    }
    if (o.apiVersion === "postgresql.cnpg.io/v1" && o.kind === "Cluster") {
      for (const p of checkCnpgCluster(o)) problems.push(`${id}: ${p}`);
      continue;
    }
    const M = await model(o.apiVersion, o.kind);
    if (!M) {
      problems.push(`${id}: no Kubernetes schema for ${o.apiVersion} ${o.kind}`);
      continue;
    }
    // The API server decodes Secret data ignoring line breaks (kustomize
    // wraps long values); the schema's "byte" format does not.
    const obj = o.kind === "Secret" && o.data ? { ...o, data: Object.fromEntries(Object.entries(o.data).map(([k, v]) => [k, String(v).replace(/\s+/g, "")])) } : o;
    try {
      new M(obj).validate();
    } catch (e) {
      problems.push(`${id}: ${e.message}`);
    }
  }
  return problems;
}

// ---------------------------------------------------------------- helpers
function labelsMatch(selector, labels) {
  const ml = selector?.matchLabels || {};
  if (Object.keys(ml).length === 0 && !(selector?.matchExpressions || []).length) return true;
  return Object.entries(ml).every(([k, v]) => labels?.[k] === v);
}

function peerUrlProblems(who, env, services, portOf) {
  const p = [];
  for (const s of services) {
    const v = `PARLEY_${s.name.toUpperCase()}_URL`;
    if (!(v in env) || s.kind !== "rpc") continue;
    const want = `tcp://${s.name}:${s.ports.rpc}`;
    const urls = String(env[v]).split(/[ ,]+/).filter(Boolean);
    if (urls.length === 0 || urls.some((u) => u !== want)) p.push(`${who}: ${v} is "${env[v]}", expected ${want}`);
    if (portOf && portOf(s.name) !== s.ports.rpc) p.push(`${who}: ${v}: no Service ${s.name} on port ${s.ports.rpc}`);
  }
  return p;
}

// Which of a service's variables a set of names lacks or has in excess.
function coverage(who, svc, names, { requireAll = true } = {}) {
  const p = [];
  for (const n of names) if (!svc.vars.has(n)) p.push(`${who}: sets ${n}, which ${svc.binary} does not read`);
  if (!requireAll) return p;
  for (const [n] of svc.vars) {
    if (svc.dbVars.includes(n)) continue;
    if (!names.includes(n)) p.push(`${who}: does not set ${n} (read by ${svc.binary})`);
  }
  if (svc.dbVars.length) {
    const set = svc.dbVars.filter((n) => names.includes(n));
    if (set.length !== 1) p.push(`${who}: must set exactly one of ${svc.dbVars.join(", ")} (sets ${set.length})`);
  }
  return p;
}

// ---------------------------------------------------------------- compose
export function checkCompose(root, services = readServices(root)) {
  const problems = [];
  const text = readFileSync(join(root, "docker-compose.yml"), "utf8");
  const doc = parse(text, { merge: true });
  // podman-compose 1.0.3 leaves "${VAR:-}" (an empty default) as it is.
  const code = text.split("\n").filter((l) => !/^\s*#/.test(l)).join("\n");
  for (const m of code.matchAll(/\$\{([A-Z0-9_]+):?-\}/g)) problems.push(`compose: write \${${m[1]}}, not ${m[0]} (podman-compose keeps an empty default as text)`);
  const cs = doc?.services || {};
  const known = new Set(services.map((s) => s.name));
  for (const name of Object.keys(cs)) {
    if (name !== "postgres" && !known.has(name)) problems.push(`compose: service ${name} has no services/${name}`);
  }
  if (!cs.postgres?.healthcheck) problems.push("compose: postgres needs a health check");
  if (!(cs.postgres?.volumes || []).some((v) => String(v).includes("/var/lib/postgresql/data"))) problems.push("compose: postgres needs a data volume");
  for (const s of services) {
    const c = cs[s.name];
    const who = `compose ${s.name}`;
    if (!c) {
      problems.push(`compose: no service ${s.name} (services/${s.name} builds ${s.binary})`);
      continue;
    }
    const cmd = Array.isArray(c.command) ? c.command : String(c.command || "").split(/\s+/);
    if (cmd[0] !== s.binary) problems.push(`${who}: command must start with ${s.binary}, is ${JSON.stringify(c.command)}`);
    if (c.build?.dockerfile !== "deploy/Dockerfile") problems.push(`${who}: must build deploy/Dockerfile`);
    const env = c.environment || {};
    if (Array.isArray(env)) {
      problems.push(`${who}: environment must be a mapping`);
      continue;
    }
    const names = Object.keys(env);
    problems.push(...coverage(who, s, names, { requireAll: s.kind !== "cli" }));
    for (const n of names) {
      const v = s.vars.get(n);
      if (v?.secret && !String(env[n]).includes("${")) problems.push(`${who}: ${n} is a secret and must come from .env (\${...}), not a literal`);
    }
    problems.push(...peerUrlProblems(who, env, services));
    if (s.kind === "rpc") {
      if (env.PARLEY_LISTEN !== `tcp://0.0.0.0:${s.ports.rpc}`) problems.push(`${who}: PARLEY_LISTEN must be tcp://0.0.0.0:${s.ports.rpc}`);
      if (String(env.PARLEY_OPS_PORT) !== String(s.ports.ops)) problems.push(`${who}: PARLEY_OPS_PORT must be ${s.ports.ops}`);
      if (c.depends_on?.postgres?.condition !== "service_healthy") problems.push(`${who}: must depend on postgres being healthy`);
    }
    if (s.kind === "http") {
      if (String(env.PARLEY_HTTP_PORT) !== String(s.ports.http)) problems.push(`${who}: PARLEY_HTTP_PORT must be ${s.ports.http}`);
      if (!(c.ports || []).some((p) => String(p).endsWith(`:${s.ports.http}`))) problems.push(`${who}: port ${s.ports.http} is not published`);
    }
    if (s.kind === "cli") {
      if (!(c.profiles || []).length) problems.push(`${who}: a tool, not a service: give it a profile so that \`up\` does not start it`);
    } else if (c.read_only !== true) problems.push(`${who}: read_only must be true`);
  }
  return problems;
}

// `docker-compose config -q` with the example .env and the secrets it
// leaves empty filled in (a syntax and schema check of the compose file).
export function composeConfig(root) {
  const env = { ...process.env };
  for (const line of readFileSync(join(root, ".env.example"), "utf8").split("\n")) {
    const m = line.match(/^([A-Z0-9_]+)=(.*)$/);
    if (m) env[m[1]] = m[2] || `check-${m[1].toLowerCase()}-0123456789`;
  }
  try {
    execFileSync("docker-compose", ["-f", join(root, "docker-compose.yml"), "--project-directory", root, "config", "-q"], {
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    return [];
  } catch (e) {
    return [`docker-compose config: ${String(e.stderr || e.message).trim()}`];
  }
}

// ---------------------------------------------------------------- Dockerfiles
export function checkDockerfiles(root, services = readServices(root)) {
  const problems = [];
  for (const f of ["deploy/Dockerfile", "deploy/postgres/Dockerfile"]) {
    const path = join(root, f);
    if (!existsSync(path)) {
      problems.push(`${f}: missing`);
      continue;
    }
    const text = readFileSync(path, "utf8");
    for (const d of lintDockerfile(text)) problems.push(`${f}:${d.range.start.line + 1}: ${d.message} (dockerfile-utils)`);
    const user = [...text.matchAll(/^USER\s+(\S+)/gm)].pop();
    if (!user || /^(root|0)(:|$)/.test(user[1])) problems.push(`${f}: the last USER must not be root`);
    if (!/^HEALTHCHECK\s+/m.test(text)) problems.push(`${f}: no HEALTHCHECK`);
    if (/^(ENV|ARG)\s+\S*(SECRET|PASSWORD|_KEY\b|DATABASE_URL)/m.test(text)) problems.push(`${f}: a secret in ENV/ARG`);
  }
  const text = existsSync(join(root, "deploy/Dockerfile")) ? readFileSync(join(root, "deploy/Dockerfile"), "utf8") : "";
  // The build stage builds parley-<d> for every services/<d>/ directory.
  if (!/for d in services\/\*\/; do printf 'parley-%s '/.test(text)) {
    for (const s of services) if (!text.includes(s.binary)) problems.push(`deploy/Dockerfile: does not build ${s.binary}`);
  }
  if (!/^COPY\s+--from=build\s+\S*\/bin\/?\s/m.test(text)) problems.push("deploy/Dockerfile: the runtime stage must copy the built binaries");
  if (!/deps\.sh build/.test(text)) problems.push("deploy/Dockerfile: the build stage must install with deploy/deps.sh");
  return problems;
}

// ---------------------------------------------------------------- manifests
export function checkManifests(objs, where, services) {
  const problems = [];
  const P = (m) => problems.push(`${where}: ${m}`);
  const of = (kind) => objs.filter((o) => o.kind === kind);
  const byName = (kind, name) => of(kind).find((o) => o.metadata.name === name);
  const cms = new Map(of("ConfigMap").map((o) => [o.metadata.name, o.data || {}]));
  const secrets = new Map(of("Secret").map((o) => [o.metadata.name, { ...(o.data || {}), ...(o.stringData || {}) }]));
  const svcPort = (name, port) => (byName("Service", name)?.spec?.ports || []).some((p) => p.port === port);
  const rpcNames = services.filter((s) => s.kind === "rpc").map((s) => s.name);

  const nss = new Set(objs.filter((o) => o.kind !== "Namespace").map((o) => o.metadata.namespace));
  if (nss.size !== 1 || nss.has(undefined)) P(`every object must be in the overlay's one namespace (found ${[...nss].join(", ")})`);

  const deny = of("NetworkPolicy").find((n) => Object.keys(n.spec?.podSelector || {}).length === 0 && (n.spec.policyTypes || []).includes("Ingress") && !(n.spec.ingress || []).length);
  if (!deny) P("no default-deny ingress NetworkPolicy");

  for (const d of of("Deployment")) {
    if (!services.some((s) => s.name === d.metadata.name && s.kind !== "cli")) P(`Deployment ${d.metadata.name} runs no service of services/`);
  }

  // Who may reach a set of pod labels on a port, from the NetworkPolicies.
  const admitted = (labels, portNames) => {
    const pods = new Set();
    const nsSel = [];
    let open = false;
    for (const np of of("NetworkPolicy")) {
      if (!labelsMatch(np.spec?.podSelector, labels)) continue;
      for (const rule of np.spec?.ingress || []) {
        const ports = rule.ports || [];
        if (ports.length && !ports.some((p) => portNames.includes(p.port))) continue;
        if (!rule.from || !rule.from.length) open = true;
        for (const f of rule.from || []) {
          if (f.ipBlock) open = true;
          if (f.namespaceSelector && !f.podSelector) nsSel.push(f.namespaceSelector);
          if (f.podSelector && !f.namespaceSelector) {
            const n = f.podSelector.matchLabels?.[NAME];
            if (n) pods.add(n);
            else if (f.podSelector.matchLabels?.["parley.io/db-client"] === "true") pods.add("*db-client");
            else open = true;
          }
        }
      }
    }
    return { pods: [...pods].sort(), nsSel, open };
  };

  for (const s of services) {
    if (s.kind === "cli") continue;
    const who = `${s.name}`;
    const d = byName("Deployment", s.name);
    if (!d) {
      P(`no Deployment ${s.name} (services/${s.name} builds ${s.binary})`);
      continue;
    }
    const pod = d.spec?.template?.spec || {};
    const podLabels = d.spec?.template?.metadata?.labels || {};
    if (!labelsMatch(d.spec?.selector, podLabels)) P(`Deployment ${who}: selector does not match its pods`);
    if (podLabels[NAME] !== s.name) P(`Deployment ${who}: pods need the label ${NAME}: ${s.name}`);
    if (d.spec?.replicas !== undefined) P(`Deployment ${who}: spec.replicas is set; the HorizontalPodAutoscaler owns the count`);
    const c = (pod.containers || [])[0];
    if (!c) {
      P(`Deployment ${who}: no container`);
      continue;
    }
    if ((c.command || [])[0] !== s.binary) P(`Deployment ${who}: command must start with ${s.binary}`);
    if (!c.image) P(`Deployment ${who}: no image`);
    if (!(typeof pod.terminationGracePeriodSeconds === "number" && pod.terminationGracePeriodSeconds >= 10)) P(`Deployment ${who}: terminationGracePeriodSeconds must be set (>= 10)`);
    const psc = pod.securityContext || {};
    const sc = c.securityContext || {};
    if (!(psc.runAsNonRoot === true || sc.runAsNonRoot === true)) P(`Deployment ${who}: runAsNonRoot must be true`);
    if (sc.readOnlyRootFilesystem !== true) P(`Deployment ${who}: readOnlyRootFilesystem must be true`);
    if (sc.allowPrivilegeEscalation !== false) P(`Deployment ${who}: allowPrivilegeEscalation must be false`);
    const r = c.resources || {};
    if (!r.requests?.cpu || !r.requests?.memory || !r.limits?.memory) P(`Deployment ${who}: resources need cpu and memory requests and a memory limit`);

    // The environment: ConfigMaps through envFrom, secrets through
    // secretKeyRef, nothing else.
    const env = {};
    const from = {};
    for (const ef of c.envFrom || []) {
      if (ef.secretRef) P(`Deployment ${who}: envFrom secretRef: give secrets one by one with secretKeyRef`);
      if (ef.configMapRef) {
        const data = cms.get(ef.configMapRef.name);
        if (!data) P(`Deployment ${who}: ConfigMap ${ef.configMapRef.name} is not in the render`);
        for (const [k, v] of Object.entries(data || {})) {
          env[k] = v;
          from[k] = "configmap";
        }
      }
    }
    for (const e of c.env || []) {
      if (e.valueFrom?.secretKeyRef) {
        const { name, key } = e.valueFrom.secretKeyRef;
        env[e.name] = `secret:${name}/${key}`;
        from[e.name] = "secret";
        if (secrets.has(name)) {
          if (!(key in secrets.get(name))) P(`Deployment ${who}: Secret ${name} has no key ${key} (for ${e.name})`);
        } else {
          const base = [...EXTERNAL_SECRETS.keys()].find((n) => n === name);
          if (!base) P(`Deployment ${who}: ${e.name} refers to Secret ${name}, neither rendered nor one of ${[...EXTERNAL_SECRETS.keys()].join(", ")}`);
          else if (name === "parley-db" && key !== s.name) P(`Deployment ${who}: ${e.name} must use key ${s.name} of parley-db`);
          else if (EXTERNAL_SECRETS.get(name) && !EXTERNAL_SECRETS.get(name).includes(key)) P(`Deployment ${who}: unknown key ${key} of ${name}`);
        }
      } else if (e.valueFrom?.configMapKeyRef) {
        env[e.name] = "configmap";
        from[e.name] = "configmap";
      } else {
        env[e.name] = e.value;
        from[e.name] = "value";
      }
    }
    const names = Object.keys(env);
    for (const p of coverage(`Deployment ${who}`, s, names)) P(p);
    for (const n of names) {
      if (s.vars.get(n)?.secret && from[n] !== "secret") P(`Deployment ${who}: ${n} is a secret and must come from a Secret (secretKeyRef), not a ${from[n]}`);
    }
    for (const p of peerUrlProblems(`Deployment ${who}`, env, services, (n) => ((byName("Service", n)?.spec?.ports || []).find((p) => p.name === "rpc") || {}).port)) P(p);

    // Ports and probes.
    const cport = (n) => (c.ports || []).find((p) => p.name === n)?.containerPort;
    const probe = (p) => p?.httpGet && { path: p.httpGet.path, port: p.httpGet.port };
    const live = probe(c.livenessProbe);
    const ready = probe(c.readinessProbe);
    if (s.kind === "rpc") {
      if (cport("rpc") !== s.ports.rpc) P(`Deployment ${who}: containerPort rpc must be ${s.ports.rpc}`);
      if (cport("ops") !== s.ports.ops) P(`Deployment ${who}: containerPort ops must be ${s.ports.ops}`);
      if (env.PARLEY_LISTEN !== `tcp://0.0.0.0:${s.ports.rpc}`) P(`Deployment ${who}: PARLEY_LISTEN must be tcp://0.0.0.0:${s.ports.rpc}`);
      if (String(env.PARLEY_OPS_PORT) !== String(s.ports.ops)) P(`Deployment ${who}: PARLEY_OPS_PORT must be ${s.ports.ops}`);
      if (!live || live.path !== "/healthz" || ![s.ports.ops, "ops"].includes(live.port)) P(`Deployment ${who}: liveness must GET /healthz on the ops port`);
      if (!ready || ready.path !== "/readyz" || ![s.ports.ops, "ops"].includes(ready.port)) P(`Deployment ${who}: readiness must GET /readyz on the ops port`);
      if (podLabels["parley.io/db-client"] !== "true") P(`Deployment ${who}: pods need parley.io/db-client: "true" to reach PostgreSQL`);
    } else {
      if (cport("http") !== s.ports.http) P(`Deployment ${who}: containerPort http must be ${s.ports.http}`);
      if (String(env.PARLEY_HTTP_PORT) !== String(s.ports.http)) P(`Deployment ${who}: PARLEY_HTTP_PORT must be ${s.ports.http}`);
      if (!live || live.path !== "/healthz" || ![s.ports.http, "http"].includes(live.port)) P(`Deployment ${who}: liveness must GET /healthz on the http port`);
      // The gateway has no /readyz: /healthz answers once it serves.
      if (!ready || !["/healthz", "/readyz"].includes(ready.path)) P(`Deployment ${who}: no HTTP readiness probe`);
    }

    // Service, HPA, PDB.
    const svc = byName("Service", s.name);
    const port = s.kind === "rpc" ? ["rpc", s.ports.rpc] : ["http", s.ports.http];
    if (!svc) P(`no Service ${s.name}`);
    else {
      if (!labelsMatch({ matchLabels: svc.spec?.selector }, podLabels) || !svc.spec?.selector) P(`Service ${who}: selector does not match the Deployment's pods`);
      const sp = (svc.spec?.ports || []).find((p) => p.name === port[0]);
      if (!sp || sp.port !== port[1] || ![port[0], port[1]].includes(sp.targetPort)) P(`Service ${who}: port ${port[0]} must be ${port[1]} -> ${port[0]}`);
    }
    const hpa = of("HorizontalPodAutoscaler").find((h) => h.spec?.scaleTargetRef?.kind === "Deployment" && h.spec.scaleTargetRef.name === s.name);
    if (!hpa) P(`no HorizontalPodAutoscaler for Deployment ${s.name}`);
    else if (hpa.apiVersion !== "autoscaling/v2") P(`HorizontalPodAutoscaler ${who}: must be autoscaling/v2`);
    else if (!(hpa.spec.minReplicas >= 1 && hpa.spec.maxReplicas >= hpa.spec.minReplicas)) P(`HorizontalPodAutoscaler ${who}: bad replica bounds`);
    if (!of("PodDisruptionBudget").some((b) => labelsMatch(b.spec?.selector, podLabels) && Object.keys(b.spec?.selector?.matchLabels || {}).length)) P(`no PodDisruptionBudget for ${s.name}`);

    // Who may call it.
    const a = admitted(podLabels, [port[0], port[1]]);
    if (a.open) P(`NetworkPolicy: ${s.name} port ${port[0]} is open to any pod or address`);
    if (s.kind === "rpc") {
      const want = s.callers.join(", ");
      if (a.pods.join(", ") !== want || a.nsSel.length) P(`NetworkPolicy: ${s.name} port rpc admits [${a.pods.join(", ")}${a.nsSel.length ? " + namespaces" : ""}], its callers are [${want}]`);
    } else {
      if (a.pods.length || !a.nsSel.length) P(`NetworkPolicy: ${s.name} must admit only the Ingress controller's namespace on ${port[0]}`);
      const ing = of("Ingress").some((i) => (i.spec?.rules || []).some((r) => (r.http?.paths || []).some((p) => p.backend?.service?.name === s.name)));
      if (!ing) P(`no Ingress routes to ${s.name}`);
    }
  }

  // The migration Job: every RPC service's `--migrate`, with the same
  // database URL as its Deployment.
  const jobs = of("Job");
  for (const name of rpcNames) {
    const s = services.find((x) => x.name === name);
    const c = jobs.flatMap((j) => j.spec?.template?.spec?.containers || []).find((x) => (x.command || [])[0] === s.binary);
    if (!c) {
      P(`no migration Job container runs ${s.binary} --migrate`);
      continue;
    }
    if ((c.command || [])[1] !== "--migrate") P(`migration Job: ${s.binary} must run with --migrate`);
    const dbe = (c.env || []).find((e) => s.dbVars.includes(e.name));
    const dep = (byName("Deployment", name)?.spec?.template?.spec?.containers?.[0]?.env || []).find((e) => s.dbVars.includes(e.name));
    if (!dbe?.valueFrom?.secretKeyRef) P(`migration Job: ${s.binary} gets no database URL from a Secret`);
    else if (dep && JSON.stringify(dbe.valueFrom.secretKeyRef) !== JSON.stringify(dep.valueFrom?.secretKeyRef)) P(`migration Job: ${s.binary} uses another database than its Deployment`);
  }
  for (const j of jobs) {
    if (j.spec?.template?.metadata?.labels?.["parley.io/db-client"] !== "true") P(`Job ${j.metadata.name}: pods need parley.io/db-client: "true" to reach PostgreSQL`);
  }

  // PostgreSQL: reachable on 5432 only from the db clients (and, for a
  // CloudNativePG cluster, its own instances and operator).
  const dbPolicies = of("NetworkPolicy").filter((n) => (n.spec?.ingress || []).some((r) => (r.ports || []).some((p) => p.port === 5432)));
  if (!dbPolicies.length) P("no NetworkPolicy for PostgreSQL (port 5432)");
  for (const np of dbPolicies) {
    for (const rule of np.spec.ingress) {
      if (!(rule.ports || []).some((p) => p.port === 5432)) continue;
      for (const f of rule.from || [{}]) {
        const ok =
          f.podSelector?.matchLabels?.["parley.io/db-client"] === "true" ||
          (f.podSelector?.matchLabels?.["cnpg.io/cluster"] && f.podSelector.matchLabels["cnpg.io/cluster"] === np.spec.podSelector?.matchLabels?.["cnpg.io/cluster"]) ||
          f.namespaceSelector?.matchLabels?.["kubernetes.io/metadata.name"] === "cnpg-system";
        if (!ok) P(`NetworkPolicy ${np.metadata.name}: PostgreSQL admits ${JSON.stringify(f)}`);
      }
    }
  }
  return problems;
}

// Everything, for one repository root.
export async function checkAll(root) {
  const services = readServices(root);
  const problems = [...checkCompose(root, services), ...composeConfig(root), ...checkDockerfiles(root, services)];
  for (const o of OVERLAYS) {
    let objs;
    try {
      objs = render(root, o);
    } catch (e) {
      problems.push(`kustomize ${o}: ${String(e.stderr || e.message).trim()}`);
      continue;
    }
    problems.push(...(await validateSchemas(objs, o)), ...checkManifests(objs, o, services));
  }
  return problems;
}
