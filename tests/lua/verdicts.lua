-- verdicts.lua - returns each verdict depending on the recipient / subject.
postern.on("rcpt", function(tx, rcpt)
  local lp = postern.localpart(rcpt)
  if lp == "reject" then return postern.REJECT("5.7.1", "lua says no") end
  if lp == "custom" then return postern.REJECT("5.1.1", "no such user here", 551) end
  if lp == "tempfail" then return postern.TEMPFAIL("4.7.1", "lua says later") end
  if lp == "accept" then return postern.ACCEPT() end
  if lp == "bad" then return 42 end
end)

postern.on("eom", function(tx)
  local s = tx:header("Subject") or ""
  if s == "discard" then return postern.DISCARD() end
  if s == "quarantine" then return postern.QUARANTINE("lua quarantine") end
  if s == "reject" then return postern.REJECT("5.7.1", "content refused by lua") end
end)
