"""Checks of the Dockerfile that need no Docker engine.

  docker_checks.py structure REPO
      The build stage runs `cargo build --release -p sediment --locked`; the
      runtime stage is scratch with a non-root user, ENTRYPOINT /sediment and
      CMD serve, and copies only the assembled root file system.

  docker_checks.py context REPO OUT_DIR
      Copies the files the Docker build context would contain (honouring
      .dockerignore) to OUT_DIR and checks that the Cargo workspace is complete
      there: Cargo.toml, Cargo.lock and every workspace member. The caller then
      runs cargo in OUT_DIR (resolution with --locked, or the full build).

Exits 1 if any assertion failed.
"""

import fnmatch
import glob
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

failures = 0
passes = 0


def ok(cond, what, detail=""):
    global failures, passes
    if cond:
        passes += 1
        print(f"  ok   {what}")
    else:
        failures += 1
        print(f"  FAIL {what}" + (f": {detail}" if detail else ""))


def stages(text):
    text = text.replace("\\\n", " ")
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]
    out, cur = [], None
    for l in lines:
        word = l.split(None, 1)[0].upper()
        if word == "FROM":
            cur = {"from": l.split()[1], "as": (l.split()[3] if len(l.split()) > 3 else None), "ins": []}
            out.append(cur)
        elif cur is not None:
            cur["ins"].append((word, l.split(None, 1)[1] if " " in l else ""))
    return out


def structure(repo):
    text = (Path(repo) / "Dockerfile").read_text()
    st = stages(text)
    ok(len(st) >= 2, "multi-stage build")
    build = st[0]
    ok(build["from"].startswith("rust:"), f"build stage is the Rust image ({build['from']})")
    arg = re.search(r"(?m)^ARG RUST_VERSION=(\S+)", text)
    ok(arg and arg.group(1) == "1.95", "build stage uses Rust 1.95 (the workspace's rust-version)")
    runs = " ".join(v for k, v in build["ins"] if k == "RUN")
    ok(re.search(r"(?<![\w-])cargo build --release -p sediment --locked(?![\w-])", runs) is not None,
       "build stage runs `cargo build --release -p sediment --locked`")
    final = st[-1]
    ok(final["from"] == "scratch", "runtime stage starts from scratch (no shell, no package manager)")
    ins = final["ins"]
    copies = [v for k, v in ins if k == "COPY"]
    ok(copies == ["--from=builder /rootfs/ /"], "runtime copies only the assembled root file system", str(copies))
    user = [v for k, v in ins if k == "USER"]
    ok(user and re.fullmatch(r"[1-9][0-9]{3,}(:[1-9][0-9]{3,})?", user[-1]) is not None, f"numeric non-root USER ({user})")
    ep = [json.loads(v) for k, v in ins if k == "ENTRYPOINT"]
    ok(ep == [["/sediment"]], "ENTRYPOINT [\"/sediment\"]")
    cmd = [json.loads(v) for k, v in ins if k == "CMD"]
    ok(cmd == [["serve"]], "CMD [\"serve\"]")
    ok("install -D -m 0755 target/release/sediment /rootfs/sediment" in text, "only the sediment binary is installed")
    ok("ca-certificates.crt" in text, "CA bundle for S3 over TLS")
    envs = " ".join(v for k, v in ins if k == "ENV")
    ok("SEDIMENT_" not in envs, "runtime sets no SEDIMENT_* defaults (they would outrank the chart's config file)", envs)


def ignored(rel, patterns):
    """Docker's .dockerignore semantics: last matching pattern wins, '!' re-includes."""
    parts = rel.split("/")
    result = False
    for neg, pat in patterns:
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if match(pat, prefix):
                result = not neg
                break
    return result


def match(pat, path):
    rx = ""
    i = 0
    while i < len(pat):
        if pat.startswith("**/", i):
            rx += "(?:.*/)?"
            i += 3
        elif pat.startswith("**", i):
            rx += ".*"
            i += 2
        elif pat[i] == "*":
            rx += "[^/]*"
            i += 1
        elif pat[i] == "?":
            rx += "[^/]"
            i += 1
        else:
            rx += re.escape(pat[i])
            i += 1
    return re.fullmatch(rx, path) is not None


def context(repo, out):
    repo, out = Path(repo), Path(out)
    patterns = []
    for line in (repo / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        pat = line[1:] if neg else line
        patterns.append((neg, pat.strip("/").removeprefix("./")))
    # The repository's files as git sees them (tracked and untracked, not ignored).
    files = subprocess.run(["git", "-C", str(repo), "ls-files", "-co", "--exclude-standard", "-z"],
                           capture_output=True, check=True).stdout.decode().split("\0")
    files = [f for f in files if f and (repo / f).is_file()]
    kept = [f for f in files if not ignored(f, patterns)]
    for f in kept:
        dst = out / f
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / f, dst)
    print(f"  context: {len(kept)} of {len(files)} files")
    ok((out / "Cargo.toml").exists(), "context has Cargo.toml")
    ok((out / "Cargo.lock").exists(), "context has Cargo.lock (needed by --locked)")
    ok(not any(f.startswith(("helm/", "terraform/", "target/")) for f in kept), "context leaves out helm/, terraform/, target/")
    ws = tomllib.loads((repo / "Cargo.toml").read_text()).get("workspace", {})
    members = [m for pat in ws.get("members", []) for m in glob.glob(pat, root_dir=repo)
               if (repo / m / "Cargo.toml").exists()]
    for m in members:
        ok((out / m / "Cargo.toml").exists(), f"context has workspace member {m}")
    pkg = [m for m in members if tomllib.loads((repo / m / "Cargo.toml").read_text()).get("package", {}).get("name") == "sediment"]
    ok(len(pkg) == 1, "workspace has the `sediment` package", str(pkg))


if __name__ == "__main__":
    if sys.argv[1] == "structure":
        structure(sys.argv[2])
    elif sys.argv[1] == "context":
        context(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown command {sys.argv[1]}")
    print(f"{passes} assertions passed, {failures} failed")
    sys.exit(1 if failures else 0)
