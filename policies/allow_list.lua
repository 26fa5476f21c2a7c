-- allow_list.lua - accept only recipients on an allow-list (one address per
-- line); everyone else is refused at RCPT with 550 5.1.1.
--   plugins = lua:policies/allow_list.lua
--   allow_list.file = file:/etc/postern/allowed-recipients
postern.options{ file = "file" }
local list = postern.option("file")

postern.on("rcpt", function(tx, rcpt)
  if not list or not postern.lookup(list, rcpt) then
    return postern.REJECT("5.1.1", "<" .. rcpt .. ">: recipient not on the allow-list")
  end
end)
