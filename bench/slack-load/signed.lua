-- wrk script: replays pre-signed, distinct slash commands (see gen.py).
-- Each wrk thread reads its own file (BODIES.<thread>), so no two requests repeat.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  requests = {}
  for line in io.lines(os.getenv("BODIES") .. "." .. id) do
    local ts, sig, body = line:match("([^\t]+)\t([^\t]+)\t(.*)")
    table.insert(requests, wrk.format("POST", "/slack/commands", {
      ["Content-Type"] = "application/x-www-form-urlencoded",
      ["X-Slack-Request-Timestamp"] = ts,
      ["X-Slack-Signature"] = sig,
    }, body))
  end
  index = 0
end

function request()
  index = index + 1
  if index > #requests then index = 1 end
  return requests[index]
end
