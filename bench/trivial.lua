-- trivial.lua - one do-nothing handler on every stage (bench/lua-overhead.sh).
for _, stage in ipairs({"connect", "helo", "mail", "rcpt", "data", "body", "eom", "queue", "deliver"}) do
  postern.on(stage, function(tx) return postern.CONTINUE end)
end
