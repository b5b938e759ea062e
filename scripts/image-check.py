#!/usr/bin/env python3
"""Proves the Dockerfile builds and runs without a Docker engine (none runs
on these machines), by doing what Docker would:

1. the build context: the working tree less what .dockerignore excludes;
2. every COPY source of every stage exists in that context;
3. the build stage: a directory holding exactly what its COPYs put in its
   WORKDIR, and its RUN commands run there, so a file the build needs but
   no COPY brings (vendor/, assets/) fails here as it would in Docker;
4. the runtime stage: its COPYs (from the context and from the build stage)
   laid out under a scratch root, its ENV (absolute paths under that root),
   and its ENTRYPOINT + CMD run as the image's non-root uid in its WORKDIR:
   the console demo deploys, and `check` passes.

Usage: scripts/image-check.py [--target-dir DIR]   (DIR keeps the build's
cargo target between runs; by default a fresh one inside the scratch dir)
"""

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fail(why):
    print(f"image-check: FAIL: {why}", file=sys.stderr)
    sys.exit(1)


def ignored_patterns():
    path = os.path.join(ROOT, ".dockerignore")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.strip().rstrip("/") for line in f if line.strip() and not line.startswith("#")]


def excluded(rel, patterns):
    """Docker's rule: a pattern matching a path or any of its parents
    excludes it; a later `!pattern` brings it back."""
    out = False
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        p = pattern[1:] if negate else pattern
        p = p.lstrip("/")
        if any(fnmatch.fnmatchcase(prefix, p) for prefix in prefixes):
            out = not negate
    return out


def context(dest):
    patterns = ignored_patterns()
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel_dir = os.path.relpath(dirpath, ROOT)
        rel_dir = "" if rel_dir == "." else rel_dir
        dirnames[:] = [d for d in dirnames if not excluded(os.path.join(rel_dir, d) if rel_dir else d, patterns)]
        for name in filenames:
            rel = os.path.join(rel_dir, name) if rel_dir else name
            if excluded(rel, patterns):
                continue
            target = os.path.join(dest, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, rel), target, follow_symlinks=False)


def instructions():
    """The Dockerfile as (stage, instruction, argument) in order."""
    with open(os.path.join(ROOT, "Dockerfile")) as f:
        text = f.read().replace("\\\n", " ")
    stages, out, stage = {}, [], None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            stage = m.group(2) or f"stage{len(stages)}"
            stages[stage] = m.group(1)
        out.append((stage, word, rest.strip()))
    return stages, out


def copy_args(rest):
    words = shlex.split(rest)
    source_stage = None
    while words and words[0].startswith("--"):
        flag = words.pop(0)
        if flag.startswith("--from="):
            source_stage = flag.split("=", 1)[1]
    return source_stage, words[:-1], words[-1]


def place(src, root, workdir, dest):
    """COPY src dest into the stage whose filesystem is under `root` (dest
    absolute, or relative to `workdir`): a directory's contents go into
    dest; a file goes to dest, or into it when dest ends with /. Nothing is
    ever written outside `root`."""
    inside = os.path.normpath(os.path.join(workdir, dest))
    target = os.path.normpath(os.path.join(root, inside.lstrip("/")))
    if os.path.commonpath([root, target]) != root:
        fail(f"COPY to {dest} leaves the stage's filesystem")
    if os.path.isdir(src):
        shutil.copytree(src, target, dirs_exist_ok=True, symlinks=True)
    else:
        if dest.endswith("/") or dest in (".", "./"):
            os.makedirs(target, exist_ok=True)
            target = os.path.join(target, os.path.basename(src))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(src, target)


def main():
    target_dir = None
    if "--target-dir" in sys.argv:
        target_dir = os.path.abspath(sys.argv[sys.argv.index("--target-dir") + 1])
    scratch = tempfile.mkdtemp(prefix="opsbot-image-")
    ctx = os.path.join(scratch, "context")
    context(ctx)
    stages, steps = instructions()
    names = list(stages)
    if len(names) < 2:
        fail("expected a build stage and a runtime stage")
    build, runtime = names[0], names[-1]
    roots = {name: os.path.join(scratch, name) for name in names}
    workdir = {name: "/" for name in names}
    env, user, entrypoint, cmd = {}, None, [], []

    def host(stage, path):
        return os.path.join(roots[stage], path.lstrip("/"))

    for stage, word, rest in steps:
        if word == "WORKDIR":
            workdir[stage] = os.path.normpath(os.path.join(workdir[stage], rest))
            os.makedirs(host(stage, workdir[stage]), exist_ok=True)
        elif word in ("COPY", "ADD"):
            source_stage, sources, dest = copy_args(rest)
            for source in sources:
                if source_stage:
                    src = host(source_stage, source)
                    if not os.path.exists(src):
                        fail(f"{stage}: COPY --from={source_stage} {source}: the build stage did not make it")
                else:
                    src = os.path.join(ctx, source)
                    if not os.path.exists(src):
                        fail(f"{stage}: COPY {source}: not in the build context (is it in .dockerignore?)")
                place(src, roots[stage], workdir[stage], dest)
        elif word == "RUN" and stage == build:
            command = rest
            print(f"image-check: {build}: RUN {command}", flush=True)
            run_env = dict(os.environ)
            if target_dir:
                run_env["CARGO_TARGET_DIR"] = target_dir
            done = subprocess.run(command, shell=True, cwd=host(stage, workdir[stage]), env=run_env)
            if done.returncode != 0:
                fail(f"{build}: RUN {command} failed ({done.returncode})")
            if target_dir:
                # What the stage's own target/ would hold.
                made = os.path.join(host(stage, workdir[stage]), "target")
                os.makedirs(os.path.join(made, "release"), exist_ok=True)
                shutil.copy2(os.path.join(target_dir, "release", "opsbot"), os.path.join(made, "release", "opsbot"))
        elif word == "ENV" and stage == runtime:
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = host(runtime, value) if value.startswith("/") else value
        elif word == "USER" and stage == runtime:
            user = rest
        elif word == "ENTRYPOINT" and stage == runtime:
            entrypoint = json.loads(rest)
        elif word == "CMD" and stage == runtime:
            cmd = json.loads(rest)

    # The runtime stage's RUN (apt-get, useradd) is not run here: its user
    # is checked against the Dockerfile and stood in for by its uid.
    with open(os.path.join(ROOT, "Dockerfile")) as f:
        uid_match = re.search(r"useradd\b[^\n]*?--uid (\d+)[^\n]*?\s(\w[\w.-]*)\s*\\?\s*$", f.read(), re.M)
    if not uid_match or uid_match.group(2) != user:
        fail(f"USER {user} is not the user the runtime stage adds")
    uid = uid_match.group(1)
    if uid == "0":
        fail("the image runs as root")
    home = host(runtime, workdir[runtime])
    os.makedirs(home, exist_ok=True)
    subprocess.run(["chown", "-R", f"{uid}:{uid}", home], check=True)
    subprocess.run(["chmod", "755", scratch, roots[runtime]], check=True)
    binary = host(runtime, "/usr/local/bin/" + entrypoint[0])
    if not os.access(binary, os.X_OK):
        fail(f"ENTRYPOINT {entrypoint[0]} is not an executable in /usr/local/bin")
    as_user = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", binary]
    run_env = {"PATH": "/usr/bin:/bin", **env}
    demo = "/deploy api-staging v1.4.2\n/wait\n/status api-staging\n"
    done = subprocess.run(as_user + entrypoint[1:] + cmd, input=demo, text=True, capture_output=True, cwd=home, env=run_env, timeout=120)
    print(done.stdout)
    if done.returncode != 0 or "now runs v1.4.2" not in done.stdout:
        fail(f"{' '.join(entrypoint + cmd)} as uid {uid}: exit {done.returncode}\n{done.stderr}")
    checked = subprocess.run(as_user + ["check"], text=True, capture_output=True, cwd=home, env=run_env, timeout=60)
    if checked.returncode != 0:
        fail(f"opsbot check as uid {uid}: exit {checked.returncode}\n{checked.stdout}{checked.stderr}")
    owned = {os.stat(os.path.join(dp, n)).st_uid for dp, _, ns in os.walk(env.get("OPSBOT_DATA_DIR", home)) for n in ns}
    if owned and owned != {int(uid)}:
        fail(f"the store holds files not owned by uid {uid}: {owned}")
    print(f"image-check: ok: context, COPY sources, `{build}` stage built, runtime stage ran as uid {uid}")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
