"""Writes N signed Discord interactions (the /status slash command) as
ready-to-send HTTP/1.1 POSTs to /discord/interactions, in the file format
bench/slack-load/signed.lua reads (see bench/slack-load/gen.py): one line
with the byte length of every request, then the requests back to back.
Each is signed as Discord signs them: Ed25519 (PyNaCl) over the timestamp
and the raw body, with the key whose seed is SECRET's SHA-256. Each has its
own interaction id, so opsbot treats every one as new (no dedup shortcut).
Usage: gen.py SECRET N OUT [THREADS]"""
import hashlib, json, sys, time
import nacl.signing

secret, count, out = sys.argv[1].encode(), int(sys.argv[2]), sys.argv[3]
threads = int(sys.argv[4]) if len(sys.argv) > 4 else 1
key = nacl.signing.SigningKey(hashlib.sha256(secret).digest())
if count == 0:
    print(key.verify_key.encode().hex())
    sys.exit(0)
ts = str(int(time.time()))
requests = [[] for _ in range(threads)]
size = None
for i in range(count):
    body = json.dumps({
        "type": 2, "id": f"{ts}{i:09d}", "application_id": "4242424242424242",
        "token": f"bench-token-{i:09d}", "version": 1, "channel_id": "7000000000000001", "guild_id": "5555555555555555",
        "member": {"user": {"id": "1000000000000001", "username": "bench"}, "roles": []},
        "data": {"id": "1", "name": "status", "type": 1, "options": [{"name": "service", "type": 3, "value": "api-service"}]},
    }, separators=(",", ":")).encode()
    sig = key.sign(ts.encode() + body).signature.hex()
    request = (
        "POST /discord/interactions HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\n"
        "Content-Type: application/json\r\n"
        f"X-Signature-Timestamp: {ts}\r\n"
        f"X-Signature-Ed25519: {sig}\r\n"
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
