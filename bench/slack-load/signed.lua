-- wrk script: replays pre-signed, distinct slash commands (see gen.py).
-- Each wrk thread reads its own file (BODIES.<thread>), so no two requests
-- repeat. init reads the file in one piece and cuts it into its fixed-size
-- requests, so request() only hands out a string that already exists. (wrk
-- runs each thread's init while the threads before it send load; run.sh uses
-- one thread, so no init overlaps the measurement.)
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  local f = assert(io.open(os.getenv("BODIES") .. "." .. id, "rb"))
  size = tonumber(f:read("*l"))
  blob = f:read("*a")
  f:close()
  requests = {}
  for start = 1, #blob - size + 1, size do
    requests[#requests + 1] = blob:sub(start, start + size - 1)
  end
  blob = nil
  index = 0
end

function request()
  index = index + 1
  if index > #requests then
    index = 1
    io.stderr:write("signed.lua: ran out of distinct requests, repeating\n")
  end
  return requests[index]
end

-- PACE_MS (optional): every connection waits a random 0 to 2 x PACE_MS
-- milliseconds (PACE_MS on average) before each request, so N connections
-- offer at most about N / PACE_MS requests per millisecond: latency at a
-- chosen load below saturation, not only at the most the server can take.
-- The wait is random so that the connections do not fall into step and
-- arrive as one burst. wrk starts a request's clock when it is written, so
-- the wait itself is not counted.
local pace = tonumber(os.getenv("PACE_MS") or "")
if pace then
  function delay()
    return math.random(0, 2 * pace)
  end
end
