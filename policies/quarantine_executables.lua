-- quarantine_executables.lua - hold every message that carries an
-- executable attachment (.exe, .scr, .js, .vbs, ...) for an admin to look
-- at: `postern queue list` shows it with the reason, `queue release` sends it.
--   plugins = lua:policies/quarantine_executables.lua
-- Bodies larger than lua_body_limit are not inspected.
postern.on("eom", function(tx)
  local name = postern.executable_attachment(tx:body())
  if name then
    return tx:quarantine("executable attachment " .. name)
  end
end)
