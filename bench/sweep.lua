-- wrk script for bench/perf.py: cycles through the request paths listed (one a line) in the
-- file named by $SWEEP_FILE; each wrk thread starts at its own offset in the list.
local paths = {}
local index = 0
local threads = 0

function setup(thread)
  thread:set("offset", threads)
  threads = threads + 1
end

function init(args)
  for line in io.lines(os.getenv("SWEEP_FILE")) do
    paths[#paths + 1] = line
  end
  index = ((offset or 0) * 7919) % #paths
end

function request()
  index = index % #paths + 1
  return wrk.format("GET", paths[index])
end
