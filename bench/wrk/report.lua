-- Shared by every bench script: counts answers by status in each thread, and prints one
-- parsable line for bench/loadgen.py when wrk is done. Latencies are in microseconds;
-- status_errors counts answers >= 400; statuses is "status:count,..." over all answers.
local threads = {}

function setup(thread)
   threads[#threads + 1] = thread
end

statuses = {}

function count_status(status)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
   local totals = {}
   for _, thread in ipairs(threads) do
      for status, count in pairs(thread:get("statuses")) do
         totals[status] = (totals[status] or 0) + count
      end
   end
   local parts = {}
   for status, count in pairs(totals) do
      parts[#parts + 1] = string.format("%d:%d", status, count)
   end
   table.sort(parts)
   local e = summary.errors
   io.write(string.format(
      "BENCH-RESULT requests=%.0f duration_us=%.0f p50_us=%.1f p99_us=%.1f status_errors=%.0f socket_errors=%.0f statuses=%s\n",
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
      e.status, e.connect + e.read + e.write + e.timeout, table.concat(parts, ",")))
end
