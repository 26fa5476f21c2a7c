-- api_probe.lua - exercises every tx:/postern. function; results come back
-- as X-Probe-* headers on the delivered message (see test_lua.py).
local seen = {}

postern.on("connect", function(tx)
  tx.session.connected_from = tx:client_addr()
end)

postern.on("helo", function(tx, helo)
  tx.session.helo_seen = helo
  tx.session.count = (tx.session.count or 0) + 1
end)

postern.on("mail", function(tx, sender)
  tx.vars.mail_arg = sender
  tx.vars.flag = true
  tx.vars.temp = "gone"
  tx.vars.temp = nil
  tx:add_recipient("added@example.test")
end)

postern.on("rcpt", function(tx, rcpt)
  tx.vars.rcpts_seen = (tx.vars.rcpts_seen or 0) + 1
end)

postern.on("data", function(tx)
  tx:insert_header(1, "X-Probe-First", "inserted at data")
  tx.vars.headers_at_data = #tx:headers()
end)

postern.on("body", function(tx, chunk)
  tx.vars.body_bytes = (tx.vars.body_bytes or 0) + #chunk
end)

postern.on("eom", function(tx)
  local h = function(name, value) tx:add_header("X-Probe-" .. name, tostring(value)) end
  h("Client", tx:client_addr())
  h("Helo", tx:helo())
  h("Session-Helo", tx.session.helo_seen)
  h("Session-Connected", tx.session.connected_from)
  h("Session-Count", tx.session.count)
  h("TLS", tx:tls())
  h("Auth", tx:auth_user())
  h("Stage", tx:stage())
  h("Queue-Id-Set", tx:queue_id() ~= "")
  h("Sender", tx:sender())
  h("Mail-Arg", tx.vars.mail_arg)
  h("Flag", tx.vars.flag)
  h("Temp", tx.vars.temp)
  h("Rcpts", table.concat(tx:recipients(), ","))
  h("Rcpts-Seen", tx.vars.rcpts_seen)
  h("Subject", tx:header("subject"))
  h("Second-Received", tx:header("Received", 2))
  h("Headers-At-Data", tx.vars.headers_at_data)
  h("Body-Bytes", tx.vars.body_bytes)
  h("Body", (tx:body() or ""):gsub("\r\n", "|"))
  h("Size", tx:size())
  h("Relay", postern.lookup("relay_domains", "example.test"))
  h("Not-Relay", postern.lookup("relay_domains", "elsewhere.test"))
  h("Trusted", postern.lookup("trusted_networks", "127.0.0.1"))
  h("Transport", postern.lookup("transport", "example.test"))
  h("File", postern.lookup(postern.option("table"), "KEY"))
  h("Option", postern.option("greeting"))
  h("Incr", postern.incr("probe", 60) >= 1)
  h("Domain", postern.domain("User@Example.TEST"))
  h("Module", require("probe_module").answer)
  tx:change_header("Subject", "changed by lua")
  tx:delete_header("X-Remove")
  tx:delete_recipient("drop@example.test")
  tx:set_sender("lua@src.test")
  tx:route("routed@example.test", postern.option("route_to"))
  tx:archive()
  postern.log("info", "api probe done")
  return postern.CONTINUE
end)

postern.on("queue", function(tx)
  -- after the 250: session variables are gone, tx:body() reads the spool
  local ok = pcall(function() return tx.session.x end)
  postern.log("info", "queue stage: session vars " .. (ok and "present" or "absent") ..
              ", body " .. tostring((tx:body() or ""):match("^original body") ~= nil))
end)

postern.on("deliver", function(tx)
  postern.log("info", "deliver stage for " .. table.concat(tx:recipients(), ","))
end)
