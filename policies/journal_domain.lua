-- journal_domain.lua - journal only mail to or from one domain: asks the
-- archive plugin (running with archive.mode = requested) for a copy.
--   plugins = lua:policies/journal_domain.lua, archive
--   journal_domain.domain = legal.example.test
--   archive.dir = /var/spool/postern-archive
--   archive.mode = requested
postern.options{ domain = "string" }
local domain = (postern.option("domain") or ""):lower()

postern.on("eom", function(tx)
  local hit = postern.domain(tx:sender()) == domain
  for _, rcpt in ipairs(tx:recipients()) do
    hit = hit or postern.domain(rcpt) == domain
  end
  if hit then tx:archive() end
end)
