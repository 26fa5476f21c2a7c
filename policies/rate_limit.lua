-- rate_limit.lua - at most MAX messages per sender address per WINDOW
-- seconds, counted across all sessions and workers; over the limit the
-- sender gets a temporary failure and retries later.
--   plugins = lua:policies/rate_limit.lua
--   rate_limit.max = 100
--   rate_limit.window = 3600
postern.options{ max = "number?", window = "number?" }
local max = tonumber(postern.option("max") or "100")
local window = tonumber(postern.option("window") or "3600")

postern.on("mail", function(tx, sender)
  if sender == "" then return end          -- bounces are not rate limited
  local n = postern.incr("rate:" .. sender:lower(), window)
  if n > max then
    postern.log("warn", "rate limit: " .. sender .. " sent " .. n .. " in " .. window .. "s")
    return postern.TEMPFAIL("4.7.1", "Too many messages from " .. sender .. ", try again later", 450)
  end
end)
