"""Structural assertions on the Terraform code, parsed with python-hcl2.

These hold without providers or credentials (terraform validate cannot run
here: no provider can be downloaded). Usage: hcl_checks.py TERRAFORM_DIR
Prints one line per assertion; exits 1 if any failed.
"""

import re
import sys
from pathlib import Path

import hcl2

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else "terraform").resolve()
failures = 0
passes = 0


def ok(cond, what):
    global failures, passes
    if cond:
        passes += 1
        print(f"  ok   {what}")
    else:
        failures += 1
        print(f"  FAIL {what}")


def unq(s):
    """hcl2 keeps the quotes of string literals and block labels."""
    if isinstance(s, str) and len(s) >= 2 and s[0] == s[-1] == '"':
        return s[1:-1]
    return s


def load_dir(d):
    """Merge every .tf file of a module into {block type: [items]}."""
    merged = {}
    for f in sorted(d.glob("*.tf")):
        with open(f) as fh:
            doc = hcl2.load(fh)
        for k, v in doc.items():
            merged.setdefault(k, []).extend(v)
    return merged


def resources(mod, rtype=None):
    """Yield (type, name, body) of the module's resource blocks."""
    for item in mod.get("resource", []):
        for t, named in item.items():
            for n, body in named.items():
                if rtype is None or unq(t) == rtype:
                    yield unq(t), unq(n), body


def blocks(body, key):
    v = body.get(key, [])
    return v if isinstance(v, list) else [v]


def variables(mod):
    for item in mod.get("variable", []):
        for n, body in item.items():
            yield unq(n), body


def outputs(mod):
    for item in mod.get("output", []):
        for n, body in item.items():
            yield unq(n), body


modules = {p.parent: load_dir(p.parent) for p in sorted(ROOT.rglob("*.tf")) if ".terraform" not in p.parts}
modules = {d: m for d, m in modules.items()}
rel = lambda d: str(d.relative_to(ROOT)) or "."

print("every module and example:")
for d, mod in modules.items():
    vs = list(variables(mod))
    ok(all(unq(b.get("description", "")) for _, b in vs), f"{rel(d)}: every variable has a description ({len(vs)})")
    ok(all("type" in b for _, b in vs), f"{rel(d)}: every variable has a type")
    outs = list(outputs(mod))
    ok(all(unq(b.get("description", "")) for _, b in outs), f"{rel(d)}: every output has a description ({len(outs)})")
    tf = [b for item in mod.get("terraform", []) for b in [item]]
    ok(any("required_version" in b for b in tf), f"{rel(d)}: pins required_version")
    used = {unq(t).split("_")[0] for t, _, _ in resources(mod)} | {
        unq(t).split("_")[0] for item in mod.get("data", []) for t in item
    }
    rp = {}
    for b in tf:
        for r in b.get("required_providers", []):
            rp.update(r)
    for p in sorted(used - {"terraform"}):
        ok(p in rp and "version" in rp[p], f"{rel(d)}: provider {p} is declared with a version constraint")

print("validation blocks:")
must_validate = {
    ".": ["name", "bucket_name", "bucket_prefix", "bucket_encryption", "kms_key_arn", "object_lock",
          "abort_incomplete_multipart_days", "vpc_cidr", "availability_zones", "kubernetes_version",
          "cluster_endpoint_public_access_cidrs", "node_instance_types", "namespace", "release_name",
          "service_account_name", "replicas", "image_repository", "hot_log_size", "external_domain"],
    "modules/config": ["name", "region", "account_id", "bucket_prefix", "node_instance_types", "replicas", "namespace"],
    "modules/bucket": ["bucket_name", "sse_algorithm", "abort_incomplete_multipart_days", "object_lock"],
    "modules/iam": ["role_name", "trust_policy_json", "broker_policy_json"],
    "modules/network": ["cidr_block", "availability_zones"],
    "modules/eks": ["kubernetes_version", "endpoint_public_access_cidrs", "node_ami_type", "node_count"],
}
for d, names in must_validate.items():
    mod = modules.get(ROOT / d if d != "." else ROOT)
    ok(mod is not None, f"{d}: module exists")
    if mod is None:
        continue
    vs = dict(variables(mod))
    for n in names:
        ok(n in vs and vs[n].get("validation"), f"{d}: variable {n} has a validation block")
    total = sum(1 for _, b in vs.items() if b.get("validation"))
    ok(total >= len(names), f"{d}: {total} of {len(vs)} variables validated")

print("bucket (modules/bucket):")
b = modules[ROOT / "modules/bucket"]
pab = [body for _, _, body in resources(b, "aws_s3_bucket_public_access_block")]
ok(len(pab) == 1 and all(pab[0].get(k) is True for k in
                         ["block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"]),
   "public access block with all four settings true")
lc = [body for _, _, body in resources(b, "aws_s3_bucket_lifecycle_configuration")]
rules = [r for body in lc for r in blocks(body, "rule")]
abort = [r for r in rules if r.get("abort_incomplete_multipart_upload")]
ok(abort and unq(abort[0].get("status")) == "Enabled", "lifecycle rule aborting incomplete multipart uploads, enabled")
ok(abort and "filter" in abort[0], "abort rule applies to the whole bucket (empty filter)")
sse = [body for _, _, body in resources(b, "aws_s3_bucket_server_side_encryption_configuration")]
ok(len(sse) == 1 and "sse_algorithm" in str(sse[0]) and "kms_master_key_id" in str(sse[0]),
   "default encryption (SSE-KMS with a key, or SSE-S3)")
ok(any("aws:kms" in str(v) and "AES256" in str(v) for n, v in variables(b) if n == "sse_algorithm"),
   "sse_algorithm allows aws:kms and AES256")
keys = [body for _, _, body in resources(b, "aws_kms_key")]
ok(keys and all(k.get("enable_key_rotation") is True for k in keys), "created KMS key rotates")
bucket = [body for _, _, body in resources(b, "aws_s3_bucket")]
ok(bucket and "object_lock_enabled" in bucket[0], "object lock can be enabled on the bucket")
ok(any(True for _ in resources(b, "aws_s3_bucket_object_lock_configuration")), "object lock default retention resource")
ok(any(True for _ in resources(b, "aws_s3_bucket_versioning")), "versioning configured")
own = [body for _, _, body in resources(b, "aws_s3_bucket_ownership_controls")]
ok(own and "BucketOwnerEnforced" in str(own[0]), "ACLs disabled (BucketOwnerEnforced)")
pol = [body for _, _, body in resources(b, "aws_s3_bucket_policy")]
ok(len(pol) == 1, "bucket policy attached")
ok(bucket and unq(str(bucket[0].get("force_destroy"))) != "true", "force_destroy is not hard-coded to true")
for what, bodies in [("bucket", bucket), ("KMS key", keys)]:
    ok(bodies and all(any(lc.get("prevent_destroy") is True for lc in blocks(body, "lifecycle")) for body in bodies),
       f"the {what} has lifecycle.prevent_destroy (a plain terraform destroy changes nothing)")

print("TLS-only bucket policy and least-privilege role (modules/config):")
cfg_text = (ROOT / "modules/config/main.tf").read_text()
ok('"aws:SecureTransport" = "false"' in cfg_text, "bucket policy denies aws:SecureTransport=false")
ok('"s3:TlsVersion" = "1.2"' in cfg_text, "bucket policy denies TLS < 1.2")
actions = set(re.findall(r'"((?:s3|kms):[A-Z][A-Za-z*]*)"', cfg_text.split("trust_policy_json")[0]))
ok(actions and not any(a.endswith("*") for a in actions), f"broker policy lists explicit actions only: {sorted(actions)}")
ok(not ({"s3:PutBucketPolicy", "s3:DeleteBucket", "s3:CreateBucket", "s3:PutLifecycleConfiguration"} & actions),
   "brokers cannot change or delete the bucket")
ok("sts:AssumeRoleWithWebIdentity" in cfg_text and ":sub\"" in cfg_text and ":aud\"" in cfg_text,
   "trust policy is web identity with sub and aud conditions (IRSA)")
ok("system:serviceaccount:${var.namespace}:${var.service_account_name}" in cfg_text,
   "trust subject is the chart's ServiceAccount")
ok('"pods.eks.amazonaws.com"' in cfg_text and '"aws:RequestTag/kubernetes-service-account" = var.service_account_name' in cfg_text,
   "Pod Identity trust: the EKS auth service, for the chart's ServiceAccount only")

print("IAM (modules/iam):")
iam = modules[ROOT / "modules/iam"]
ok([n for _, n, _ in resources(iam, "aws_iam_role")] == ["broker"], "one role for the brokers")
ok(not any(True for _ in resources(iam, "aws_iam_role_policy_attachment")), "no managed (broad) policies attached")

print("network (modules/network):")
net = modules[ROOT / "modules/network"]
subnets = {n: body for _, n, body in resources(net, "aws_subnet")}
ok({"public", "private"} <= set(subnets), "public and private subnets")
ok(all("count" in s and "availability_zones" in str(s.get("availability_zone")) for s in subnets.values()),
   "one subnet of each kind per availability zone")
ok(unq(str(subnets.get("public", {}).get("map_public_ip_on_launch"))) in ("False", "false"),
   "no public IPs on launch")
ok(any(True for _ in resources(net, "aws_flow_log")), "VPC flow logs")
ok(any(True for _ in resources(net, "aws_default_security_group")), "default security group locked down")
ep = [body for _, _, body in resources(net, "aws_vpc_endpoint")]
ok(ep and unq(ep[0].get("vpc_endpoint_type")) == "Gateway", "S3 gateway endpoint")

print("EKS (modules/eks):")
eks = modules[ROOT / "modules/eks"]
cl = [body for _, _, body in resources(eks, "aws_eks_cluster")]
ok(cl and cl[0].get("encryption_config"), "secrets envelope encryption")
ok(cl and cl[0].get("enabled_cluster_log_types"), "control-plane logging")
ok(cl and blocks(cl[0], "vpc_config")[0].get("endpoint_private_access") is True, "private API endpoint")
ok(any(True for _ in resources(eks, "aws_iam_openid_connect_provider")), "IAM OIDC provider for IRSA")
ngs = {n: body for _, n, body in resources(eks, "aws_eks_node_group")}
ok("brokers" in ngs and "taint" in ngs["brokers"] and "labels" in ngs["brokers"], "dedicated, tainted broker node group")
lts = {n: body for _, n, body in resources(eks, "aws_launch_template")}
ok(all(unq(blocks(lt, "metadata_options")[0].get("http_tokens")) == "required" for lt in lts.values()),
   "IMDSv2 required on every launch template")
ok(all(blocks(lt, "metadata_options")[0].get("http_put_response_hop_limit") == 1 for lt in lts.values()),
   "IMDS hop limit 1 (pods cannot reach node credentials)")
ok("RAID0" in (ROOT / "modules/eks/main.tf").read_text(), "instance NVMe striped as RAID-0 under the kubelet (nodeadm)")
cfg_vars = dict(variables(modules[ROOT / "modules/config"]))
nit = str(cfg_vars["node_instance_types"].get("validation"))
ok(all(f in nit for f in ["i4i", "i7ie", "im4gn"]), "node instance types restricted to NVMe families (i4i/i7ie/im4gn ...)")

print("Helm release (modules/release) and root wiring:")
rel_mod = modules[ROOT / "modules/release"]
hr = [body for _, _, body in resources(rel_mod, "helm_release")]
ok(hr and "helm/sediment" in str(hr[0].get("chart")), "helm_release installs ../helm/sediment")
ok(hr and hr[0].get("wait") is True, "helm_release waits for ready brokers")
chart_dir = (ROOT / "modules/release" / "../../../helm/sediment").resolve()
ok((chart_dir / "Chart.yaml").exists(), f"chart path resolves to {chart_dir}")
root = modules[ROOT]
mods = {}
for item in root.get("module", []):
    for n, body in item.items():
        mods[unq(n)] = body
ok(set(mods) >= {"config", "bucket", "iam", "network", "eks", "release"}, f"root composes {sorted(mods)}")
ok("module.config.helm_values" in str(mods.get("release", {}).get("values")), "release gets the computed values")
ok("module.config.trust_policy_json" in str(mods.get("iam", {})), "role trusts the chart's ServiceAccount via config")
ok("oidc_provider_arn" in str(mods.get("config", {})), "config gets the cluster's OIDC provider")
ok("var.pod_credentials" in str(mods.get("config", {})), "config gets the credential mode")
td = {n: body for _, n, body in resources(root, "terraform_data")}
ok("initial_voters" in td and "input" in str(blocks(td["initial_voters"], "lifecycle")[0].get("ignore_changes")),
   "the first apply's replicas are remembered as the initial voters (ignore_changes)")
ok("terraform_data.initial_voters.output" in str(mods.get("config", {}).get("initial_voters")),
   "raising replicas keeps the chart's initialVoters (new brokers are joiners)")
assoc = [body for _, _, body in resources(root, "aws_eks_pod_identity_association")]
ok(assoc and "pod_identity" in str(assoc[0].get("count")) and "module.iam.role_arn" in str(assoc[0].get("role_arn"))
   and "var.service_account_name" in str(assoc[0].get("service_account")),
   "Pod Identity: the role is associated with the brokers' ServiceAccount")
ok("aws_eks_pod_identity_association.brokers" in str(mods.get("release", {}).get("depends_on")),
   "the release waits for the association (pods get Pod Identity credentials only at creation)")
addons = [body for _, _, body in resources(eks, "aws_eks_addon")]
ok(addons and "eks-pod-identity-agent" in str(addons[0].get("for_each")), "the created cluster runs the Pod Identity agent")
outs = dict(outputs(root))
ok({"bootstrap_servers", "bucket_name", "broker_role_arn"} <= set(outs), "outputs: bootstrap address, bucket, role")
for ex in ["examples/complete", "examples/existing-cluster"]:
    m = modules.get(ROOT / ex)
    ok(m is not None, f"{ex} exists")
    if m:
        srcs = [unq(b.get("source")) for item in m.get("module", []) for b in item.values()]
        ok("../.." in srcs, f"{ex} uses the root module")
        ok(any("helm" in map(unq, item) for item in m.get("provider", [])), f"{ex} configures the helm provider")
ex = modules.get(ROOT / "examples/existing-cluster", {})
ok("existing_cluster_name" in str(ex.get("module", [])), "existing-cluster example deploys into an existing cluster")

print(f"{passes} assertions passed, {failures} failed")
sys.exit(1 if failures else 0)
