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
