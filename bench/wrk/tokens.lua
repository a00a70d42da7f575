-- Validation of many distinct access tokens: every request sends the next token of the file
-- BENCH_TOKENS (one a line) as X-API-KEY, from line BENCH_START (default 1), wrapping around
-- at the end. With one token in the file it is the one-token case at the same script cost.
-- Run with one wrk thread (the position is kept in the thread's Lua state).
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "report.lua")

local tokens = {}
local position = 0

function init(args)
   for token in io.lines(os.getenv("BENCH_TOKENS")) do
      tokens[#tokens + 1] = token
   end
   position = (tonumber(os.getenv("BENCH_START") or "1") or 1) - 1
end

function request()
   position = position % #tokens + 1
   return wrk.format("POST", nil, {["X-API-KEY"] = tokens[position]}, "")
end

function response(status, headers, body)
   count_status(status)
end
