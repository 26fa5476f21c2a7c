-- postern_helpers.lua - Lua-side helpers loaded into every policy state
-- before the script (embedded into posternd at build time).

-- The domain of an address ("" when there is none), lower-case.
function postern.domain(addr)
  return (addr:match("@([^@]*)$") or ""):lower()
end

-- The local part of an address, lower-case.
function postern.localpart(addr)
  return (addr:match("^(.*)@[^@]*$") or addr):lower()
end

-- File names of the MIME parts in a body: filename= and name= parameters,
-- quoted or not (RFC 2183 / 2045). Good enough for policy, not a parser.
function postern.attachment_names(body)
  local names, seen = {}, {}
  if not body then return names end
  for _, pattern in ipairs({ '[Ff][Ii][Ll][Ee][Nn][Aa][Mm][Ee]%*?=%s*"([^"\r\n]+)"',
                             '[Ff][Ii][Ll][Ee][Nn][Aa][Mm][Ee]%*?=%s*([^";\r\n%s]+)',
                             '[;%s][Nn][Aa][Mm][Ee]=%s*"([^"\r\n]+)"',
                             '[;%s][Nn][Aa][Mm][Ee]=%s*([^";\r\n%s]+)' }) do
    for name in body:gmatch(pattern) do
      if not seen[name] then seen[name] = true; names[#names + 1] = name end
    end
  end
  return names
end

local executable = { exe = true, scr = true, com = true, bat = true, cmd = true, pif = true, vbs = true,
                     js = true, jse = true, wsf = true, msi = true, jar = true, ps1 = true, hta = true }

-- The first attachment name with an executable extension, or nil.
function postern.executable_attachment(body)
  for _, name in ipairs(postern.attachment_names(body)) do
    local ext = name:match("%.([%w]+)$")
    if ext and executable[ext:lower()] then return name end
  end
  return nil
end
