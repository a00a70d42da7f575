-- Chained refreshes: a refresh token is single use, so every request spends one token
-- and every successful answer gives the next one back to the pool.
-- BENCH_REFRESH_TOKENS names a file of unused refresh tokens, one a line: one per
-- connection, plus one for the request wrk builds to check the script before it starts.
-- The pool lives in the thread's Lua state: run with one wrk thread.
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "report.lua")

local pool = {}

function init(args)
   for token in io.lines(os.getenv("BENCH_REFRESH_TOKENS")) do
      pool[#pool + 1] = token
   end
end

function request()
   -- An empty pool means answers failed; the placeholder is refused and counted as an error.
   local token = table.remove(pool) or "pool-exhausted"
   return wrk.format("POST", nil, {["Content-Type"] = "application/json"},
      '{"refreshToken":"' .. token .. '"}')
end

function response(status, headers, body)
   count_status(status)
   if status >= 200 and status < 300 then
      local token = body:match('"refresh_?[Tt]oken"%s*:%s*"([^"]+)"')
      if token then
         pool[#pool + 1] = token
      end
   end
end
