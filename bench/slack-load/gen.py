"""Writes N signed /status slash-command requests as ready-to-send HTTP/1.1
requests, dealt round-robin into THREADS files OUT.0, OUT.1, ... (one per wrk
thread). Each file starts with one line holding the byte length of every
request in it, then the requests back to back. All requests have the same
length (the counter in trigger_id is zero-padded), so signed.lua can slice
request i out of the file without parsing it: wrk's setup stays in the
milliseconds, instead of seconds of Lua that would run on the measured cores
while wrk's first thread is already sending.
Each request has its own trigger_id, so opsbot treats every one as a new
command (no dedup shortcut). Usage: gen.py SECRET N OUT [THREADS]"""
import hashlib, hmac, sys, time, urllib.parse

secret, count, out = sys.argv[1].encode(), int(sys.argv[2]), sys.argv[3]
threads = int(sys.argv[4]) if len(sys.argv) > 4 else 1
ts = str(int(time.time()))
prefix = b"v0:" + ts.encode() + b":"
requests = [[] for _ in range(threads)]
size = None
for i in range(count):
    body = urllib.parse.urlencode({
        "token": "x", "team_id": "T1", "channel_id": "CBENCH", "user_id": "UBENCH1",
        "command": "/status", "text": "api-service", "trigger_id": f"bench.{ts}.{i:09d}",
        "response_url": "https://hooks.slack.com/commands/T1/1/x", "api_app_id": "A1",
    }).encode()
    sig = "v0=" + hmac.new(secret, prefix + body, hashlib.sha256).hexdigest()
    request = (
        "POST /slack/commands HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"X-Slack-Request-Timestamp: {ts}\r\n"
        f"X-Slack-Signature: {sig}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    ).encode() + body
    size = size or len(request)
    assert len(request) == size, "requests must all have the same length"
    requests[i % threads].append(request)
for t, batch in enumerate(requests):
    with open(f"{out}.{t}", "wb") as f:
        f.write(f"{size}\n".encode())
        f.write(b"".join(batch))
