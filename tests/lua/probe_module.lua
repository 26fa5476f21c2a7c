-- probe_module.lua - a module loaded with require() from the script's directory.
return { answer = 42 }
