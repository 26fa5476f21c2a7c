-- sandbox.lua - each recipient name tries something the sandbox forbids.
local attempts = {
  os_execute = function() return os.execute("touch /tmp/postern-sandbox-escape") end,
  io_open = function() return io.open("/etc/passwd") end,
  loadfile = function() return loadfile("/etc/passwd") end,
  dofile = function() return dofile("/etc/passwd") end,
  load = function() return load("return 1") end,
  require_path = function() return require("../../etc/passwd") end,
  require_missing = function() return require("no_such_module") end,
  getenv = function() return os.getenv("HOME") end,
  debug = function() return debug.getinfo(1) end,
  package = function() return package.loadlib("libc.so.6", "system") end,
  loop = function() while true do end end,
  memory = function() local t = {} for i = 1, 1e9 do t[i] = string.rep("x", 4096) .. i end end,
  error = function() error("a policy bug") end,
  stash = function(tx) STASHED = tx end,
  use_stash = function() return STASHED:sender() end,
}

postern.on("rcpt", function(tx, rcpt)
  local f = attempts[postern.localpart(rcpt)]
  if f then f(tx) end
end)
