"""Repository-level checks of the deployment files.

  repo_checks.py skip-reasons REPO   every checkov skip carries a written reason
  repo_checks.py hosts REPO          deployment files name no download hosts

Exits 1 if any assertion failed.
"""

import re
import sys
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


def deploy_files(repo):
    repo = Path(repo)
    out = [repo / "Dockerfile", repo / ".dockerignore", repo / "docs" / "deploy.md"]
    for d in ["helm", "terraform", "tests/deploy"]:
        out += [p for p in (repo / d).rglob("*") if p.is_file() and ".terraform" not in p.parts
                and "__pycache__" not in p.parts]
    return [p for p in out if p.exists()]


def skip_reasons(repo):
    n = 0
    for p in deploy_files(repo):
        if p.suffix not in (".tf", ".yaml", ".tpl", "") or p.name.endswith(".py"):
            continue
        text = p.read_text()
        rel = p.relative_to(repo)
        for m in re.finditer(r"checkov:skip=([^\n]*)", text):
            n += 1
            ok(re.fullmatch(r"CKV2?_[A-Z0-9]+_\d+:\s*\S.{15,}", m.group(1).strip()) is not None,
               f"{rel}: skip {m.group(1)[:20]}... has a reason", m.group(1))
        for m in re.finditer(r"checkov\.io/skip\d+:\s*([^\n]*)", text):
            n += 1
            ok(re.fullmatch(r"CKV2?_[A-Z0-9]+_\d+=\S.{15,}", m.group(1).strip()) is not None,
               f"{rel}: annotation skip {m.group(1)[:20]}... has a reason", m.group(1))
    ok(n > 0, f"found {n} checkov skips")


ALLOWED = re.compile(
    r"^(localhost|127\.0\.0\.1|0\.0\.0\.0"
    r"|([a-z0-9-]+\.)*example(\.com|\.org)?"
    r"|([a-z0-9-]+\.)*svc(\.cluster\.local)?"
    r"|([a-z0-9-]+\.)*local)(:\d+)?$"
)


def hosts(repo):
    for p in deploy_files(repo):
        if p.name == "repo_checks.py":
            continue
        rel = p.relative_to(repo)
        bad = sorted({m.group(1) for m in re.finditer(r"\b(?:https?|oci|git)://([^/\s\"'`)>,]+)", p.read_text())
                      if not ALLOWED.match(m.group(1)) and "${" not in m.group(1) and "{{" not in m.group(1)
                      and m.group(1) not in ("BUCKET", "PREFIX")})
        ok(not bad, f"{rel}: no download hosts named", ", ".join(bad))


if __name__ == "__main__":
    {"skip-reasons": skip_reasons, "hosts": hosts}[sys.argv[1]](sys.argv[2])
    print(f"{passes} assertions passed, {failures} failed")
    sys.exit(1 if failures else 0)
