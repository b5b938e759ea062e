"""Writes N signed /status slash-command requests, one per line:
timestamp <TAB> signature <TAB> body, dealt round-robin into THREADS files
OUT.0, OUT.1, ... (one per wrk thread, so no thread parses lines it skips).
Each has its own trigger_id, so opsbot treats every one as a new command
(no dedup shortcut). Usage: gen.py SECRET N OUT [THREADS]"""
import hashlib, hmac, sys, time, urllib.parse

secret, count, out = sys.argv[1].encode(), int(sys.argv[2]), sys.argv[3]
threads = int(sys.argv[4]) if len(sys.argv) > 4 else 1
ts = str(int(time.time()))
prefix = b"v0:" + ts.encode() + b":"
files = [open(f"{out}.{t}", "w") for t in range(threads)]
for i in range(count):
    body = urllib.parse.urlencode({
        "token": "x", "team_id": "T1", "channel_id": "CBENCH", "user_id": "UBENCH1",
        "command": "/status", "text": "api-service", "trigger_id": f"bench.{ts}.{i}",
        "response_url": "https://hooks.slack.com/commands/T1/1/x", "api_app_id": "A1",
    })
    sig = "v0=" + hmac.new(secret, prefix + body.encode(), hashlib.sha256).hexdigest()
    files[i % threads].write(f"{ts}\t{sig}\t{body}\n")
for f in files:
    f.close()
