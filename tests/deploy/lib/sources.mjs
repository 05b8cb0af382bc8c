// What the services' sources say about deployment: which binaries exist,
// which PARLEY_* variables each one reads, and the ports it listens on.
// Read from the C sources themselves (the pl_cfg tables, getenv calls, the
// pl_service_def), so a variable or a service added in code and not in
// docker-compose.yml or deploy/k8s makes the consistency test fail.
import { readFileSync, readdirSync, existsSync } from "node:fs";
import { join } from "node:path";

const CFG_ENTRY = /\{\s*"(PARLEY_[A-Z0-9_]+)"\s*,\s*PL_CFG_([A-Z]+)\s*,\s*(NULL|"[^"]*"|[A-Za-z_][^,]*)/g;
// Variables read with getenv() that hold secrets (pl_cfg tables say it with
// PL_CFG_SECRET): kept out of ConfigMaps and compose literals.
const SECRET_NAME = /SECRET|PASSWORD|TOKEN|_KEY$|_KEYS$|DATABASE_URL/;
const GETENV = /\b(?:getenv|env)\(\s*"(PARLEY_[A-Z0-9_]+)"\s*\)/g;

function cFiles(dir) {
  return readdirSync(dir)
    .filter((f) => f.endsWith(".c"))
    .sort()
    .map((f) => [f, readFileSync(join(dir, f), "utf8")]);
}

function cfgEntries(text) {
  const out = [];
  for (const m of text.matchAll(CFG_ENTRY)) {
    const def = m[3].trim();
    out.push({
      name: m[1],
      type: m[2],
      // NULL, or "migrate_only ? \"\" : NULL": required when serving.
      required: def === "NULL" || /:\s*NULL$/.test(def),
      def: def.startsWith('"') ? def.slice(1, -1) : null,
      secret: m[2] === "SECRET",
    });
  }
  return out;
}

// The variables every pl_service_main service reads (common/src/service.c),
// with PARLEY_<SVC>_DATABASE_URL made from the service's name.
function commonVars(root) {
  const text = readFileSync(join(root, "common/src/service.c"), "utf8");
  const vars = cfgEntries(text);
  if (!/"PARLEY_%s_DATABASE_URL"/.test(text)) throw new Error("common/src/service.c: the per-service database variable changed; update tests/deploy/lib/sources.mjs");
  if (vars.length < 5) throw new Error("common/src/service.c: could not read its pl_cfg table");
  return vars;
}

// Returns [{ name, kind: "rpc"|"http"|"cli", binary, vars: Map(name -> {type, required, def}),
//            dbVars: [names] (either one configures the database), ports: {rpc, ops, http} }]
export function readServices(root) {
  const common = commonVars(root);
  const services = [];
  const sdir = join(root, "services");
  for (const name of readdirSync(sdir).sort()) {
    const dir = join(sdir, name);
    const cm = join(dir, "CMakeLists.txt");
    if (!existsSync(cm)) continue;
    if (!new RegExp(`parley_service\\(\\s*${name}\\s*\\)`).test(readFileSync(cm, "utf8")))
      throw new Error(`services/${name}/CMakeLists.txt does not call parley_service(${name})`);
    const files = cFiles(dir);
    const all = files.map(([, t]) => t).join("\n");
    const vars = new Map();
    const add = (v) => {
      const old = vars.get(v.name);
      if (!old || (v.required && !old.required)) vars.set(v.name, v);
    };
    for (const v of cfgEntries(all)) add(v);
    for (const m of all.matchAll(GETENV)) add({ name: m[1], type: "STRING", required: false, def: null, secret: SECRET_NAME.test(m[1]) });
    const svc = { name, binary: `parley-${name}`, vars, dbVars: [], ports: {} };
    const listen = all.match(/\.default_listen\s*=\s*"[a-z+]+:\/\/[^"]*:(\d+)"/);
    const ops = all.match(/\.default_ops_port\s*=\s*(\d+)/);
    if (listen && ops) {
      svc.kind = "rpc";
      svc.ports.rpc = Number(listen[1]);
      svc.ports.ops = Number(ops[1]);
      for (const v of common) add(v);
      const own = `PARLEY_${name.toUpperCase()}_DATABASE_URL`;
      add({ name: own, type: "SECRET", required: false, def: "", secret: true });
      svc.dbVars = ["PARLEY_DATABASE_URL", own];
    } else if (vars.has("PARLEY_HTTP_PORT")) {
      svc.kind = "http";
      svc.ports.http = Number(vars.get("PARLEY_HTTP_PORT").def);
    } else {
      svc.kind = "cli";
    }
    services.push(svc);
  }
  // Who calls whom: a service that reads PARLEY_<X>_URL is a client of X.
  const byEnv = new Map(services.map((s) => [`PARLEY_${s.name.toUpperCase()}_URL`, s.name]));
  for (const s of services) {
    s.calls = [...s.vars.keys()].filter((v) => byEnv.has(v)).map((v) => byEnv.get(v)).filter((n) => n !== s.name).sort();
  }
  for (const s of services) {
    s.callers = services.filter((c) => c.calls.includes(s.name)).map((c) => c.name).sort();
  }
  return services;
}

// Run directly: print what the sources say (handy when writing manifests).
if (import.meta.url === `file://${process.argv[1]}`) {
  const root = process.argv[2] || join(import.meta.dirname, "../../..");
  for (const s of readServices(root)) {
    console.log(`${s.name} (${s.kind}) ports=${JSON.stringify(s.ports)} calls=${s.calls} callers=${s.callers}`);
    for (const [n, v] of s.vars) console.log(`  ${n} ${v.type}${v.required ? " required" : ""}${v.secret ? " secret" : ""} default=${JSON.stringify(v.def)}`);
  }
}
