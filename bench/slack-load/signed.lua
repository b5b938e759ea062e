-- wrk script: replays pre-signed, distinct slash commands (see gen.py).
-- Each wrk thread takes every n-th line so no two requests repeat.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local nthreads = tonumber(os.getenv("WRK_THREADS"))
  requests = {}
  local n = 0
  for line in io.lines(os.getenv("BODIES")) do
    if n % nthreads == id then
      local ts, sig, body = line:match("([^\t]+)\t([^\t]+)\t(.*)")
      table.insert(requests, wrk.format("POST", "/slack/commands", {
        ["Content-Type"] = "application/x-www-form-urlencoded",
        ["X-Slack-Request-Timestamp"] = ts,
        ["X-Slack-Signature"] = sig,
      }, body))
    end
    n = n + 1
  end
  index = 0
end

function request()
  index = index + 1
  if index > #requests then index = 1 end
  return requests[index]
end
