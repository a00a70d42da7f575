-- One fixed request, described by bench/loadgen.py in the environment:
-- BENCH_METHOD, BENCH_HEADERS ("Name: value" lines) and BENCH_BODY (optional).
-- No request() function: wrk builds the request once and replays it at full speed;
-- response() only counts statuses.
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "report.lua")

wrk.method = os.getenv("BENCH_METHOD") or "GET"
wrk.body = os.getenv("BENCH_BODY")
for line in (os.getenv("BENCH_HEADERS") or ""):gmatch("[^\n]+") do
   local name, value = line:match("^([^:]+):%s*(.*)$")
   if name then
      wrk.headers[name] = value
   end
end

function response(status, headers, body)
   count_status(status)
end
