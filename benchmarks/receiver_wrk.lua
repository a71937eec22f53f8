-- wrk script for benchmarks/receiver_benchmark.py: signed Stripe deliveries, pre-signed.
--
--   wrk -t1 -c32 -d60s --latency -s benchmarks/receiver_wrk.lua URL -- DELIVERIES_FILE LIMIT
--
-- DELIVERIES_FILE holds one delivery per line, "<Stripe-Signature>\t<JSON body>", signed by the
-- Python script moments before (the signatures stay valid for Stripe's 300 s tolerance). Each
-- request sends the next line, so every request is a new event unless the file runs out and wraps.
-- With several wrk threads each takes every Nth line, so no two threads send the same event.
-- A thread stops after LIMIT / threads responses, which bounds the run by count as well as by -d.
-- `done` prints one JSON line (prefixed "RESULT ") that the Python script reads.

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_index", thread_count - 1)
  table.insert(threads, thread)
end

local requests = {}
local next_request = 0
local responses = 0
local limit = 0
non_200 = 0
statuses = ""

function init(args)
  local path = args[1]
  local total_limit = tonumber(args[2])
  local stride = tonumber(args[3]) or 1
  local index = thread_index or 0
  local n = 0
  for line in io.lines(path) do
    if n % stride == index then
      local signature, body = line:match("^([^\t]+)\t(.*)$")
      table.insert(requests, wrk.format("POST", nil, {
        ["Content-Type"] = "application/json",
        ["Stripe-Signature"] = signature,
      }, body))
    end
    n = n + 1
  end
  limit = math.floor(total_limit / stride)
end

function request()
  next_request = next_request + 1
  if next_request > #requests then
    next_request = 1
  end
  return requests[next_request]
end

function response(status, headers, body)
  responses = responses + 1
  if status ~= 200 then
    non_200 = non_200 + 1
    if #statuses < 200 then
      statuses = statuses .. tostring(status) .. " "
    end
  end
  if responses >= limit then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests_stats)
  local bad = 0
  local seen = ""
  for _, thread in ipairs(threads) do
    bad = bad + (thread:get("non_200") or 0)
    seen = seen .. (thread:get("statuses") or "")
  end
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "non_200": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "timeouts": %d, "status_errors": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "p999_us": %d, "max_us": %d, ' ..
    '"mean_us": %.1f, "sample_statuses": "%s"}\n',
    summary.requests, summary.duration, bad, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, summary.errors.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean, seen))
end
