-- disclaimer.lua - add a footer to outbound mail (sent by a client in
-- trusted_networks). Plain-text messages only: MIME multipart messages are
-- passed through unchanged and logged.
--   plugins = lua:policies/disclaimer.lua
--   disclaimer.text = This message is confidential.
postern.options{ text = "string?" }
local text = postern.option("text") or "This message may contain confidential information."

postern.on("eom", function(tx)
  if not postern.lookup("trusted_networks", tx:client_addr()) then return end
  local ctype = (tx:header("Content-Type") or "text/plain"):lower()
  if not ctype:match("^%s*text/plain") then
    postern.log("info", "disclaimer: not plain text (" .. ctype .. "), left alone")
    return
  end
  local body = tx:body()
  if not body then return end               -- larger than lua_body_limit
  if body ~= "" and body:sub(-2) ~= "\r\n" then body = body .. "\r\n" end
  tx:replace_body(body .. "-- \r\n" .. text .. "\r\n")
end)
