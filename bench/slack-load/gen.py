"""Writes N signed /status slash-command requests, one per line:
timestamp <TAB> signature <TAB> body. Each has its own trigger_id, so opsbot
treats every one as a new command (no dedup shortcut)."""
import hashlib, hmac, sys, time, urllib.parse

secret, count, out = sys.argv[1].encode(), int(sys.argv[2]), sys.argv[3]
ts = str(int(time.time()))
prefix = b"v0:" + ts.encode() + b":"
with open(out, "w") as f:
    for i in range(count):
        body = urllib.parse.urlencode({
            "token": "x", "team_id": "T1", "channel_id": "CBENCH", "user_id": "UBENCH1",
            "command": "/status", "text": "api-service", "trigger_id": f"bench.{ts}.{i}",
            "response_url": "https://hooks.slack.com/commands/T1/1/x", "api_app_id": "A1",
        })
        sig = "v0=" + hmac.new(secret, prefix + body.encode(), hashlib.sha256).hexdigest()
        f.write(f"{ts}\t{sig}\t{body}\n")
