-- route_departments.lua - send one domain's mail to a different next hop per
-- department. The department is the leading letters of the local part
-- (sales@, sales-eu@ -> "sales"); the table maps departments to next hops.
--   plugins = lua:policies/route_departments.lua
--   route_departments.domain = example.test
--   route_departments.table  = file:/etc/postern/departments
-- with lines like:   sales  smtp:[192.0.2.10]:25
--                    hr     smtp:[192.0.2.20]:25
postern.options{ domain = "string", table = "file" }
local domain = (postern.option("domain") or ""):lower()
local departments = postern.option("table")

postern.on("eom", function(tx)
  for _, rcpt in ipairs(tx:recipients()) do
    if postern.domain(rcpt) == domain then
      local dept = postern.localpart(rcpt):match("^(%a+)")
      local hop = dept and departments and postern.lookup(departments, dept)
      if hop then
        tx:route(rcpt, hop)
        postern.log("info", rcpt .. " -> department " .. dept .. " via " .. hop)
      end
    end
  end
end)
